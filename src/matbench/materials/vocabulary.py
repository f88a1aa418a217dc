"""The curated material vocabulary of LVIS-materials: canonical names and their synonyms.

Canonical names are short lower-case English nouns, usable as captions on their own ("wood",
"stainless steel"). Synonyms include adjective forms ("wooden", "metallic") so that names and
definitions of object categories can be matched against the vocabulary. The DMS and FMD class
names all resolve to a canonical name (see :func:`canonical`).
"""

from __future__ import annotations

#: Canonical material name -> synonyms (lower case; the canonical name itself is implied).
VOCABULARY: dict[str, tuple[str, ...]] = {
    # metals
    "metal": ("metallic", "metal sheet", "sheet metal"),
    "steel": ("steel plate",),
    "stainless steel": ("inox", "brushed steel"),
    "iron": ("wrought iron",),
    "cast iron": (),
    "aluminium": ("aluminum", "aluminium foil", "aluminum foil", "tinfoil", "foil"),
    "copper": ("coppery",),
    "brass": (),
    "bronze": (),
    "gold": ("golden", "gilded"),
    "silver": ("silvery", "silverware metal"),
    "chrome": ("chromium", "chrome-plated", "chromed"),
    "tin": ("tinplate",),
    "lead": (),
    "zinc": ("galvanized steel", "galvanised steel"),
    "titanium": (),
    "wire": ("metal wire", "wire mesh"),
    "rust": ("rusty metal", "rusted metal"),
    # woods and plant fibres
    "wood": ("wooden", "timber", "lumber", "wood, tree", "woodwork"),
    "hardwood": ("oak", "walnut", "maple wood", "mahogany", "teak", "cherry wood"),
    "softwood": ("pine", "pinewood", "cedar", "spruce", "fir wood"),
    "plywood": (),
    "particle board": ("chipboard", "mdf", "fiberboard", "fibreboard"),
    "bamboo": (),
    "rattan": (),
    "wicker": ("wickerwork", "woven cane"),
    "cork": ("corkboard", "cork/corkboard"),
    "bark": ("tree bark",),
    "straw": ("hay",),
    "reed": ("rush",),
    "driftwood": (),
    "veneer": ("wood veneer",),
    # paper family
    "paper": ("paper sheet",),
    "cardboard": ("carton", "paperboard", "card stock", "corrugated cardboard"),
    "newspaper": ("newsprint",),
    "tissue paper": ("tissue", "paper towel"),
    "parchment": ("vellum",),
    "wallpaper": (),
    "photograph": ("photograph/painting", "photo print", "painting", "canvas painting"),
    # plastics and polymers
    "plastic": ("plastic, non-clear", "polymer"),
    "clear plastic": ("plastic, clear", "transparent plastic", "acrylic", "plexiglass", "perspex"),
    "polyethylene": ("plastic film", "plastic wrap", "cling film"),
    "polystyrene": ("styrofoam", "expanded polystyrene", "foam plastic"),
    "pvc": ("vinyl", "polyvinyl chloride"),
    "nylon": (),
    "polyester": (),
    "rubber": ("rubber/latex", "latex", "natural rubber"),
    "silicone": (),
    "foam": ("foam rubber", "polyurethane foam"),
    "fiberglass": ("fibreglass", "fiberglass wool", "glass fibre", "glass fiber"),
    "carbon fiber": ("carbon fibre",),
    "resin": ("epoxy",),
    "melamine": (),
    "laminate": ("formica",),
    # glass and ceramics
    "glass": ("glassware",),
    "frosted glass": ("opaque glass",),
    "stained glass": (),
    "mirror": ("mirror glass",),
    "crystal": ("lead crystal", "crystal glass"),
    "ceramic": ("ceramics", "earthenware", "stoneware"),
    "porcelain": ("china", "bone china"),
    "terracotta": ("terra cotta", "clay pot", "fired clay"),
    "tile": ("tiles", "ceramic tile"),
    "ceiling tile": (),
    "enamel": ("enamelled metal", "enameled metal"),
    # stone and minerals
    "stone": ("stone, natural", "natural stone", "rock"),
    "polished stone": ("stone, polished",),
    "marble": (),
    "granite": (),
    "slate": (),
    "sandstone": (),
    "limestone": (),
    "engineered stone": ("quartz composite", "quartz countertop"),
    "gemstone": ("gemstone/quartz", "gem", "jewel", "quartz"),
    "pebble": ("pebbles", "gravel"),
    "concrete": ("cement",),
    "asphalt": ("tarmac", "bitumen"),
    "brick": ("brickwork", "bricks"),
    "plaster": ("paint/plaster/enamel", "stucco", "drywall", "gypsum"),
    "paint": ("painted surface", "lacquer"),
    "clay": ("modelling clay",),
    "chalk": (),
    "chalkboard": ("chalkboard/blackboard", "blackboard"),
    "whiteboard": ("dry-erase board",),
    "salt": (),
    # textiles
    "fabric": ("fabric/cloth", "cloth", "textile", "woven fabric"),
    "cotton": (),
    "denim": ("jean", "jeans fabric"),
    "wool": ("woollen", "woolen", "knit", "knitted wool", "yarn"),
    "felt": (),
    "silk": (),
    "satin": (),
    "linen": (),
    "velvet": ("velour",),
    "lace": (),
    "canvas": ("canvas fabric", "sailcloth"),
    "burlap": ("hessian", "jute"),
    "fleece": (),
    "carpet": ("carpet/rug", "rug", "carpeting"),
    "mesh": ("netting", "net"),
    "rope": ("cord", "twine", "string"),
    "fur": ("pelt", "faux fur"),
    "leather": ("suede", "leatherette", "hide"),
    "animal skin": ("skin of an animal", "reptile skin", "scales"),
    "feather": ("feathers", "plumage", "down"),
    "hair": ("human hair",),
    "skin": ("skin/lips", "human skin", "lips"),
    "bone": ("bone/teeth/horn", "teeth", "horn", "ivory", "antler"),
    "shell": ("seashell", "eggshell"),
    "pearl": ("mother of pearl", "nacre"),
    # biological and food
    "foliage": ("leaves", "leaf", "grass"),
    "tree": ("wood of a tree", "tree trunk"),
    "flower": ("petals", "petal", "blossom"),
    "food": ("foodstuff",),
    "fruit": (),
    "vegetable": ("vegetables",),
    "bread": ("baked dough", "pastry"),
    "meat": (),
    "cheese": (),
    "chocolate": ("cocoa",),
    "sugar": ("icing", "frosting"),
    "egg": (),
    "cooked food": ("cooked dish",),
    # liquids, natural surfaces, states
    "water": (),
    "liquid": ("liquid, non-water", "beverage", "drink"),
    "ice": (),
    "snow": (),
    "sand": (),
    "soil": ("soil/mud", "mud", "dirt", "earth"),
    "fire": ("flame",),
    "smoke": (),
    "sky": (),
    "cloud": ("clouds",),
    "wax": ("paraffin",),
    "soap": (),
    "sponge": (),
    "oil": (),
    # electronics and composites
    "electronics": ("circuit board", "electronic components"),
    "screen": ("display", "lcd screen", "touchscreen"),
    "solar panel": ("photovoltaic panel",),
    "composite": ("composite material",),
}


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for name, synonyms in VOCABULARY.items():
        for alias in (name, *synonyms):
            key = _norm(alias)
            if key in lookup and lookup[key] != name:
                raise ValueError(
                    f"material alias '{alias}' names both '{lookup[key]}' and '{name}'"
                )
            lookup[key] = name
    return lookup


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


_LOOKUP = _build_lookup()


def material_names() -> list[str]:
    """The canonical material names, in vocabulary order."""
    return list(VOCABULARY)


def canonical(name: str) -> str:
    """The canonical name of a material name or synonym (case and ``_`` insensitive).

    Raises:
        KeyError: naming the unknown material.
    """
    key = _norm(name)
    if key not in _LOOKUP:
        raise KeyError(f"unknown material '{name}': not in the matbench material vocabulary")
    return _LOOKUP[key]


def is_material(name: str) -> bool:
    """True when ``name`` is a canonical material name or a synonym of one."""
    return _norm(name) in _LOOKUP


def aliases() -> dict[str, str]:
    """Every alias (canonical names included, normalised) -> canonical name."""
    return dict(_LOOKUP)

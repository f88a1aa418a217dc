"""The LVIS category -> material prior table: how it is built, and how it is read.

The table (``matbench/data/lvis_material_prior.json``) maps each LVIS v1 category name to the
material(s) an object of that category is most often made of, most likely first, over the
vocabulary of :mod:`matbench.materials.vocabulary`. It is the "frequency-based" recipe of
LVIS-materials: every object of a category gets the category's material.

It is built once from the LVIS v1 category list (name, synonyms, synset and definition) by the
rules below, in priority order, and the output is committed::

    python -m matbench.materials.prior \
        --categories ../shared/data/lvis/lvis_v1_categories.json \
        --out src/matbench/data/lvis_material_prior.json

1. ``CATEGORY_MATERIALS``: a hand-curated answer for a category (by its LVIS name).
2. A material word in the category's name or synonyms (``paper_plate`` -> paper,
   ``wooden_spoon`` -> wood), from the unambiguous words of ``NAME_WORDS``.
3. The definition says what the object is made of (``made of leather``, ``a glass container``,
   ``a wooden ...``), from the words of ``DEF_WORDS``.
4. The head noun of the name (its last word, e.g. ``beer_bottle`` -> bottle) in ``HEAD_NOUNS``.
5. The kind of thing that the head of the definition names (food, animal, plant, garment...)
   from ``KIND_WORDS``.

A category that no rule decides is listed under ``unknown`` and gets no prior material: the
table does not guess. Objects of unknown categories are labelled only by per-object
predictions (see :mod:`matbench.materials.sidecar`).
"""

from __future__ import annotations

import argparse
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from matbench.materials.vocabulary import canonical

PRIOR_FILE = "lvis_material_prior.json"
PRIOR_VERSION = 1

#: Hand-curated categories (LVIS v1 names) whose material the generic rules get wrong or miss.
CATEGORY_MATERIALS: dict[str, tuple[str, ...]] = {
    "aerosol_can": ("metal",),
    "air_conditioner": ("metal", "plastic"),
    "airplane": ("metal",),
    "alarm_clock": ("plastic",),
    "ambulance": ("metal",),
    "amplifier": ("plastic", "metal"),
    "anklet": ("metal",),
    "antenna": ("metal",),
    "apron": ("fabric",),
    "aquarium": ("glass",),
    "armchair": ("fabric", "wood"),
    "armoire": ("wood",),
    "armor": ("metal",),
    "ashtray": ("glass", "ceramic"),
    "atomizer": ("glass", "plastic"),
    "award": ("metal", "glass"),
    "awning": ("canvas",),
    "ax": ("metal", "wood"),
    "backpack": ("fabric",),
    "handbag": ("leather", "fabric"),
    "suitcase": ("plastic", "fabric"),
    "bagel": ("bread",),
    "baguet": ("bread",),
    "balloon": ("rubber",),
    "bandage": ("fabric",),
    "bandanna": ("cotton",),
    "banner": ("fabric",),
    "barbell": ("metal",),
    "barge": ("metal",),
    "barrel": ("wood", "metal"),
    "barrette": ("plastic", "metal"),
    "baseball": ("leather",),
    "baseball_bat": ("wood",),
    "baseball_cap": ("cotton",),
    "baseball_glove": ("leather",),
    "basket": ("wicker",),
    "basketball": ("rubber", "leather"),
    "bathrobe": ("cotton",),
    "bathtub": ("ceramic", "enamel"),
    "beachball": ("plastic",),
    "beanbag": ("fabric",),
    "beanie": ("wool",),
    "bed": ("fabric", "wood"),
    "bedspread": ("fabric",),
    "belt": ("leather",),
    "belt_buckle": ("metal",),
    "bench": ("wood", "metal"),
    "beret": ("wool",),
    "bib": ("cotton",),
    "bicycle": ("metal",),
    "billboard": ("paper", "metal"),
    "binder": ("plastic", "cardboard"),
    "binoculars": ("plastic", "metal"),
    "birdcage": ("metal", "wire"),
    "birdhouse": ("wood",),
    "blanket": ("wool", "fabric"),
    "blazer": ("wool", "fabric"),
    "blender": ("plastic", "glass"),
    "blimp": ("fabric",),
    "blouse": ("fabric",),
    "boat": ("wood", "fiberglass", "metal"),
    "bolt": ("steel",),
    "book": ("paper",),
    "bookcase": ("wood",),
    "booklet": ("paper",),
    "bookmark": ("paper",),
    "boot": ("leather", "rubber"),
    "bottle": ("glass", "plastic"),
    "bottle_cap": ("metal", "plastic"),
    "bow-tie": ("silk", "fabric"),
    "bowl": ("ceramic",),
    "bowling_ball": ("resin", "plastic"),
    "box": ("cardboard",),
    "bracelet": ("metal",),
    "brassiere": ("fabric",),
    "bread": ("bread",),
    "briefcase": ("leather",),
    "broom": ("plastic", "straw"),
    "bucket": ("plastic", "metal"),
    "bulldozer": ("metal",),
    "bus_(vehicle)": ("metal",),
    "button": ("plastic",),
    "cab_(taxi)": ("metal",),
    "cabinet": ("wood",),
    "can": ("aluminium",),
    "candle": ("wax",),
    "canoe": ("fiberglass", "wood"),
    "cap_(headwear)": ("cotton", "fabric"),
    "car_(automobile)": ("metal", "paint"),
    "cardigan": ("wool",),
    "carton": ("cardboard",),
    "chair": ("wood", "plastic"),
    "chandelier": ("crystal", "metal"),
    "chopping_board": ("wood",),
    "chopstick": ("wood", "bamboo"),
    "clipboard": ("particle board",),
    "clothespin": ("wood", "plastic"),
    "coat": ("wool", "fabric"),
    "coat_hanger": ("plastic", "wood"),
    "coin": ("metal",),
    "computer_keyboard": ("plastic",),
    "cone": ("plastic",),
    "cork_(bottle_plug)": ("cork",),
    "couch": ("fabric", "leather"),
    "crate": ("wood", "plastic"),
    "crown": ("gold", "metal"),
    "cup": ("ceramic",),
    "cupboard": ("wood",),
    "curtain": ("fabric",),
    "cushion": ("fabric",),
    "desk": ("wood",),
    "diaper": ("fabric", "plastic"),
    "dining_table": ("wood",),
    "dish": ("ceramic",),
    "doll": ("plastic", "fabric"),
    "doormat": ("rubber", "fabric"),
    "drawer": ("wood",),
    "dress": ("fabric",),
    "envelope": ("paper",),
    "eyeglasses": ("glass", "plastic"),
    "fan": ("plastic", "metal"),
    "faucet": ("chrome", "metal"),
    "fence": ("wood", "metal"),
    "fire_alarm": ("plastic",),
    "fire_engine": ("metal",),
    "fire_extinguisher": ("metal",),
    "fire_hydrant": ("metal",),
    "fireplace": ("brick", "stone"),
    "flag": ("fabric",),
    "flip-flop_(sandal)": ("rubber",),
    "flowerpot": ("terracotta", "ceramic"),
    "football_(American)": ("leather",),
    "fork": ("stainless steel",),
    "frisbee": ("plastic",),
    "frying_pan": ("metal",),
    "glove": ("leather", "fabric"),
    "goggles": ("plastic",),
    "golf_club": ("metal",),
    "guitar": ("wood",),
    "hair_dryer": ("plastic",),
    "hammer": ("metal",),
    "handle": ("metal", "plastic"),
    "hat": ("fabric", "straw"),
    "headboard": ("wood",),
    "helmet": ("plastic",),
    "hose": ("rubber",),
    "jacket": ("fabric",),
    "jar": ("glass",),
    "jean": ("denim",),
    "jersey": ("polyester", "fabric"),
    "kite": ("nylon", "fabric"),
    "knife": ("stainless steel",),
    "ladder": ("metal", "wood"),
    "lamp": ("metal", "glass"),
    "lamppost": ("metal",),
    "laptop_computer": ("plastic", "aluminium"),
    "lightbulb": ("glass",),
    "lipstick": ("metal", "plastic"),
    "magazine": ("paper",),
    "mailbox_(at_home)": ("metal",),
    "mask": ("plastic", "fabric"),
    "mattress": ("fabric", "foam"),
    "microwave_oven": ("metal", "glass"),
    "mirror": ("mirror",),
    "motorcycle": ("metal",),
    "mouse_(computer_equipment)": ("plastic",),
    "mug": ("ceramic",),
    "napkin": ("paper", "fabric"),
    "necklace": ("metal", "gemstone"),
    "necktie": ("silk", "fabric"),
    "newspaper": ("newspaper",),
    "notebook": ("paper",),
    "oven": ("metal",),
    "paddle": ("wood", "plastic"),
    "painting": ("photograph",),
    "pan_(for_cooking)": ("metal",),
    "pants": ("denim", "fabric"),
    "paper_towel": ("tissue paper",),
    "parasol": ("fabric",),
    "parking_meter": ("metal",),
    "pen": ("plastic",),
    "pencil": ("wood",),
    "phonebook": ("paper",),
    "piano": ("wood",),
    "picture": ("photograph",),
    "pillow": ("fabric",),
    "pipe": ("metal",),
    "pitcher_(vessel_for_liquid)": ("glass", "ceramic"),
    "pizza": ("cooked food",),
    "place_mat": ("fabric", "plastic"),
    "plate": ("ceramic",),
    "pliers": ("metal",),
    "pole": ("metal", "wood"),
    "polo_shirt": ("cotton",),
    "poster": ("paper",),
    "pot": ("metal",),
    "postcard": ("paper",),
    "purse": ("leather",),
    "quilt": ("fabric",),
    "rag_doll": ("fabric",),
    "railcar_(part_of_a_train)": ("metal",),
    "razorblade": ("steel",),
    "refrigerator": ("metal",),
    "remote_control": ("plastic",),
    "ring": ("metal",),
    "sail": ("canvas",),
    "sandal_(type_of_shoe)": ("leather",),
    "saucer": ("porcelain", "ceramic"),
    "saucepan": ("metal",),
    "scarf": ("wool", "fabric"),
    "scissors": ("metal",),
    "scoreboard": ("metal", "screen"),
    "screwdriver": ("metal", "plastic"),
    "shirt": ("cotton",),
    "shoe": ("leather",),
    "short_pants": ("fabric",),
    "shower_curtain": ("plastic",),
    "sink": ("ceramic", "stainless steel"),
    "skateboard": ("wood",),
    "ski": ("fiberglass", "plastic"),
    "skirt": ("fabric",),
    "slipper_(footwear)": ("fabric",),
    "soccer_ball": ("leather", "plastic"),
    "sock": ("cotton",),
    "sofa": ("fabric", "leather"),
    "spatula": ("plastic", "metal"),
    "speaker_(stero_equipment)": ("plastic", "fabric"),
    "spoon": ("stainless steel",),
    "stool": ("wood",),
    "stop_sign": ("metal", "paint"),
    "street_sign": ("metal", "paint"),
    "streetlight": ("metal",),
    "suit_(clothing)": ("wool", "fabric"),
    "sunglasses": ("plastic",),
    "surfboard": ("fiberglass",),
    "sweater": ("wool",),
    "sweatshirt": ("cotton",),
    "table": ("wood",),
    "tablecloth": ("fabric",),
    "tag": ("paper", "plastic"),
    "tank_top_(clothing)": ("cotton",),
    "teapot": ("ceramic",),
    "teddy_bear": ("fur", "fabric"),
    "telephone": ("plastic",),
    "telephone_pole": ("wood",),
    "television_set": ("plastic", "screen"),
    "tennis_ball": ("felt", "rubber"),
    "tennis_racket": ("carbon fiber", "metal"),
    "tights_(clothing)": ("nylon",),
    "tire": ("rubber",),
    "toaster": ("metal",),
    "toilet": ("porcelain", "ceramic"),
    "toilet_tissue": ("tissue paper",),
    "toothbrush": ("plastic",),
    "towel": ("cotton",),
    "toy": ("plastic",),
    "traffic_light": ("metal",),
    "train_(railroad_vehicle)": ("metal",),
    "trash_can": ("plastic", "metal"),
    "tray": ("plastic", "metal"),
    "trousers": ("fabric",),
    "truck": ("metal",),
    "umbrella": ("fabric",),
    "underwear": ("cotton",),
    "urinal": ("porcelain",),
    "vase": ("glass", "ceramic"),
    "vest": ("fabric",),
    "wall_socket": ("plastic",),
    "wallet": ("leather",),
    "watch": ("metal",),
    "water_bottle": ("plastic",),
    "water_jug": ("plastic",),
    "wheel": ("rubber", "metal"),
    "windshield_wiper": ("rubber", "metal"),
    "wine_bottle": ("glass",),
    "wineglass": ("glass",),
    "wristband": ("fabric",),
    "wristlet": ("fabric",),
    "zipper": ("metal",),
    # natural things with a definite substance
    "ice_cream": ("food",),
    "cream_pitcher": ("ceramic",),
    "milk": ("liquid",),
    "water_ski": ("fiberglass",),
    "snowboard": ("fiberglass",),
    "snowman": ("snow",),
    "icicle": ("ice",),
    "person": (),
    "baby_buggy": ("fabric", "metal"),
    "horse": ("fur",),
    "cow": ("fur",),
    "sheep": ("wool",),
    "egg": ("egg",),
    "straw_(for_drinking)": ("plastic",),
    "drinking_fountain": ("metal",),
    "fishing_rod": ("carbon fiber",),
}

#: More curated categories, compactly: "category=material[,material]" entries.
_MORE = """
zebra=fur giraffe=fur deer=fur monkey=fur rabbit=fur squirrel=fur rat=fur ferret=fur koala=fur
pony=fur ram_(animal)=wool lamb_(animal)=wool calf=fur bull=fur gazelle=fur walrus=animal_skin
shark=animal_skin turtle=shell hippopotamus=animal_skin rhinoceros=animal_skin
dolphin=animal_skin goldfish=animal_skin fish=animal_skin dalmatian=fur shepherd_dog=fur
pug-dog=fur cub_(animal)=fur mammoth=fur black_sheep=wool parrot=feather pelican=feather
puffin=feather vulture=feather goose=feather dove=feather parakeet=feather bird=feather
crab_(animal)=shell octopus_(animal)=animal_skin domestic_ass=fur
applesauce=food apricot=fruit asparagus=vegetable batter_(food)=food boiled_egg=egg
brownie=chocolate bubble_gum=food burrito=cooked_food butter=food cake=bread
cappuccino=liquid cauliflower=vegetable chili_(vegetable)=vegetable crisp_(potato_chip)=food
chocolate_bar=chocolate chocolate_milk=liquid clementine=fruit condiment=food cookie=bread
edible_corn=vegetable cornmeal=food crabmeat=meat cracker=bread crouton=bread doughnut=bread
eclair=bread egg_yolk=egg escargot=meat fish_(food)=meat garlic=vegetable gelatin=food
gourd=vegetable grape=fruit green_onion=vegetable grits=food jam=food lamb-chop=meat
martini=liquid mashed_potato=cooked_food mushroom=food nut=food octopus_(food)=meat
olive_oil=oil omelet=egg onion=vegetable orange_(fruit)=fruit pastry=bread patty_(food)=meat
pepper=vegetable pita_(bread)=bread prune=fruit pudding=food pumpkin=vegetable
quesadilla=cooked_food quiche=cooked_food rib_(food)=meat salmon_(food)=meat
sandwich=cooked_food sour_cream=food soya_milk=liquid squid_(food)=meat steak_(food)=meat
sushi=cooked_food taco=cooked_food toast_(food)=bread turkey_(food)=meat vinegar=liquid
whipped_cream=food broccoli=vegetable
bamboo=bamboo battery=metal blackboard=chalkboard birdbath=concrete bunk_bed=wood
canteen=metal car_battery=plastic horse_carriage=wood cash_register=plastic chain_mail=metal
chalice=metal chessboard=wood chinaware=porcelain cigarette=paper clarinet=wood cowbell=metal
deck_chair=wood dog_collar=leather dollar=paper doorknob=metal dumpster=metal dustpan=plastic
eggbeater=metal Ferris_wheel=metal ferry=metal flagpole=metal food_processor=plastic
funnel=plastic futon=fabric gargoyle=stone gondola_(boat)=wood gravestone=stone
hairbrush=plastic hairnet=mesh hairpin=metal hammock=fabric handcuff=steel headband=fabric
headscarf=fabric hourglass=glass jeep=metal jet_plane=metal jewelry=metal kayak=plastic
keg=metal kilt=wool kitchen_sink=stainless_steel lampshade=fabric lantern=metal
limousine=metal loveseat=fabric mail_slot=metal mallet=wood manhole=metal matchbox=cardboard
minivan=metal mitten=wool money=paper motor_vehicle=metal mousepad=foam neckerchief=fabric
nightshirt=cotton ottoman=fabric pantyhose=nylon paperweight=glass pennant=fabric
penny_(coin)=copper pepper_mill=wood phonograph_record=pvc piggy_bank=ceramic pistol=metal
pitchfork=metal plow_(farm_equipment)=metal pocket_watch=metal pocketknife=stainless_steel
rearview_mirror=mirror recliner=fabric,leather rocking_chair=wood runner_(carpet)=carpet
saddlebag=leather saltshaker=glass sawhorse=wood scarecrow=straw seaplane=metal shears=metal
shower_head=chrome ski_pole=aluminium skewer=metal skullcap=fabric soupspoon=stainless_steel
space_shuttle=metal stepladder=metal strainer=metal sunhat=straw tapestry=fabric tarp=plastic
tartan=wool thread=cotton tiara=metal towel_rack=metal turban=fabric turtleneck_(clothing)=wool
typewriter=metal unicycle=metal urn=ceramic vat=metal wagon_wheel=wood wardrobe=wood
washbasin=ceramic water_tower=metal wig=hair wreath=foliage yacht=fiberglass
yoke_(animal_equipment)=wood legging_(clothing)=fabric jumpsuit=fabric halter_top=fabric
sportswear=polyester sweatband=cotton eyepatch=fabric cast=plaster cigarette_case=metal
veil=fabric underdrawers=cotton tux=wool breechcloth=fabric corset=fabric earplug=foam
flannel=cotton fleece=fleece gift_wrap=paper leather=leather soap=soap sponge=sponge
tinfoil=aluminium tissue_paper=tissue_paper seashell=shell gemstone=gemstone jewel=gemstone
parchment=parchment lip_balm=wax perfume=liquid shampoo=liquid Lego=plastic
ping-pong_ball=plastic softball=leather volleyball=leather dental_floss=nylon chime=metal
wind_chime=metal sparkler_(fireworks)=fire bouquet=flower flower_arrangement=flower
Christmas_tree=tree nest=straw oil_lamp=metal,glass beer_bottle=glass wedding_ring=gold
table_lamp=metal,glass salmon_(fish)=animal_skin prawn=shell puffer_(fish)=animal_skin
"""
CATEGORY_MATERIALS.update(
    {
        name: tuple(m.replace("_", " ") for m in mats.split(","))
        for name, mats in (item.split("=") for item in _MORE.split())
    }
)

#: Material words that, as a whole word of a category's name or synonym, give its material.
NAME_WORDS: dict[str, str] = {
    "paper": "paper",
    "plastic": "plastic",
    "wooden": "wood",
    "wood": "wood",
    "glass": "glass",
    "leather": "leather",
    "rubber": "rubber",
    "steel": "steel",
    "cardboard": "cardboard",
    "cotton": "cotton",
    "wool": "wool",
    "woolen": "wool",
    "silk": "silk",
    "velvet": "velvet",
    "denim": "denim",
    "canvas": "canvas",
    "foam": "foam",
    "wicker": "wicker",
    "bamboo": "bamboo",
    "cork": "cork",
    "corkboard": "cork",
    "plywood": "plywood",
    "concrete": "concrete",
    "brick": "brick",
    "marble": "marble",
    "porcelain": "porcelain",
    "ceramic": "ceramic",
    "china": "porcelain",
    "chinaware": "porcelain",
    "tinfoil": "aluminium",
    "foil": "aluminium",
    "aluminum": "aluminium",
    "copper": "copper",
    "brass": "brass",
    "bronze": "bronze",
    "chrome": "chrome",
    "silver": "silver",
    "silverware": "silver",
    "metal": "metal",
    "iron": "metal",
    "tin": "tin",
    "sponge": "sponge",
    "soap": "soap",
    "mirror": "mirror",
    "crystal": "crystal",
    "wax": "wax",
    "felt": "felt",
    "fur": "fur",
    "feather": "feather",
    "mesh": "mesh",
    "vinyl": "pvc",
    "styrofoam": "polystyrene",
    "chalkboard": "chalkboard",
    "blackboard": "chalkboard",
    "whiteboard": "whiteboard",
    "terracotta": "terracotta",
    "earthenware": "ceramic",
    "stoneware": "ceramic",
    "knitted": "wool",
    "lace": "lace",
    "linen": "linen",
    "burlap": "burlap",
    "rope": "rope",
    "wire": "wire",
    "pearl": "pearl",
}

#: Adjectives/nouns that give the material when the definition says the object is made of them.
DEF_WORDS: dict[str, str] = {
    **{k: v for k, v in NAME_WORDS.items() if k not in ("china", "iron", "rope", "wire", "tin")},
    "metallic": "metal",
    "cloth": "fabric",
    "fabric": "fabric",
    "textile": "fabric",
    "woven": "fabric",
    "clay": "clay",
    "stone": "stone",
    "straw": "straw",
    "nylon": "nylon",
    "iron": "iron",
    "gold": "gold",
    "golden": "gold",
    "stainless": "stainless steel",
    "wicker": "wicker",
    "rattan": "rattan",
    "cane": "rattan",
    "skin": "leather",
    "hide": "leather",
    "yarn": "wool",
    "fleece": "fleece",
}

_HEAD_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("box",), "cardboard"),
    (("basket",), "wicker"),
    (("bag", "toy", "card", "container"), "plastic"),
    (
        (
            "car",
            "truck",
            "can",
            "pin",
            "iron",
            "pan",
            "gun",
            "oven",
            "antenna",
            "buggy",
            "bus",
            "cart",
            "knife",
            "needle",
            "scooter",
            "sharpener",
            "spoon",
            "tank",
            "ship",
            "train",
            "wrench",
            "kettle",
            "key",
            "lock",
            "medal",
            "nail",
            "padlock",
            "razor",
            "rifle",
            "saw",
            "screw",
            "shovel",
            "sword",
            "trailer",
            "trophy",
            "van",
            "wagon",
            "bell",
            "chain",
            "cymbal",
            "dagger",
            "engine",
            "faucet",
            "fork",
            "grill",
            "hook",
            "jet",
            "ladle",
            "machine",
            "magnet",
            "mailbox",
            "motor",
            "hinge",
            "opener",
            "tongs",
            "tripod",
            "crowbar",
            "cufflink",
            "corkscrew",
            "colander",
            "compass",
            "clasp",
            "thimble",
            "whistle",
            "stapler",
            "locker",
            "anchor",
            "cannon",
            "boiler",
            "cleaver",
            "harmonica",
            "trumpet",
            "saxophone",
            "trombone",
            "tuba",
            "flute",
            "dumbbell",
            "helicopter",
            "tractor",
            "forklift",
            "tricycle",
            "wheelchair",
            "stove",
            "heater",
            "radiator",
            "dishwasher",
            "freezer",
            "pot",
            "teakettle",
            "wok",
            "skillet",
            "griddle",
            "cooker",
            "shaker",
            "earring",
            "brooch",
            "broach",
            "buckle",
            "scale",
            "weathervane",
            "thumbtack",
            "cruiser",
            "dirt",
            "bike",
            "shovel",
        ),
        "metal",
    ),
    (("glass", "goblet", "lens", "lightbulb", "bulb", "window", "fishbowl"), "glass"),
    (("plate", "bowl", "mug", "cup", "teacup", "saucer", "dish", "vase"), "ceramic"),
    (
        (
            "towel",
            "mat",
            "coat",
            "suit",
            "skirt",
            "blanket",
            "vest",
            "curtain",
            "jacket",
            "parka",
            "shirt",
            "pants",
            "flag",
            "dress",
            "gown",
            "robe",
            "cloak",
            "cape",
            "tent",
            "pillow",
            "cushion",
            "quilt",
            "sheet",
            "napkin",
            "handkerchief",
            "scarf",
            "shawl",
            "apron",
            "kimono",
            "poncho",
            "leotard",
            "pajamas",
            "costume",
            "coverall",
            "sweater",
            "tights",
            "stocking",
            "sock",
            "hat",
            "cap",
            "bonnet",
            "hood",
            "diaper",
            "sail",
            "parachute",
            "banner",
            "pouch",
            "dishrag",
            "dishtowel",
            "raincoat",
            "swimsuit",
            "windsock",
            "potholder",
            "sling",
            "strap",
            "lanyard",
        ),
        "fabric",
    ),
    (
        (
            "bat",
            "stick",
            "cabinet",
            "table",
            "desk",
            "chest",
            "shelf",
            "bookcase",
            "crate",
            "bench",
            "stool",
            "dresser",
            "paddle",
            "oar",
            "easel",
            "pencil",
            "violin",
            "cello",
            "guitar",
            "banjo",
            "drumstick",
            "chopstick",
            "toothpick",
            "log",
            "plank",
            "canoe",
            "raft",
            "dollhouse",
            "cupboard",
            "sideboard",
            "footstool",
            "cradle",
            "crib",
            "pew",
            "manger",
            "highchair",
            "coatrack",
            "pegboard",
        ),
        "wood",
    ),
    (
        (
            "book",
            "map",
            "envelope",
            "poster",
            "ticket",
            "receipt",
            "newspaper",
            "magazine",
            "notebook",
            "notepad",
            "calendar",
            "diary",
            "booklet",
            "pamphlet",
            "menu",
            "label",
            "sticker",
            "postcard",
            "checkbook",
            "passport",
            "bible",
            "comic",
            "kite",
            "packet",
        ),
        "paper",
    ),
    (("tire", "hose", "balloon", "eraser", "boot", "flipper"), "rubber"),
    (
        ("shoe", "belt", "saddle", "wallet", "purse", "glove", "briefcase", "holster", "satchel"),
        "leather",
    ),
    (
        (
            "bottle",
            "helmet",
            "control",
            "telephone",
            "phone",
            "cellphone",
            "camera",
            "calculator",
            "printer",
            "monitor",
            "keyboard",
            "mouse",
            "remote",
            "controller",
            "toothbrush",
            "comb",
            "cone",
            "buoy",
            "frisbee",
            "cooler",
            "thermos",
            "headset",
            "earphone",
            "headphone",
            "sunglasses",
            "goggles",
            "visor",
            "player",
            "cassette",
            "disk",
            "dvd",
            "pen",
            "marker",
            "crayon",
            "pacifier",
            "hanger",
            "dispenser",
            "blender",
            "mixer",
            "fan",
            "bin",
            "tray",
            "detergent",
            "camcorder",
            "webcam",
            "ipod",
            "joystick",
            "router",
            "drone",
            "syringe",
            "inhaler",
            "dropper",
            "stylus",
            "sharpie",
            "videotape",
        ),
        "plastic",
    ),
)

#: Head nouns (last word of the name) whose objects are usually of one material.
HEAD_NOUNS: dict[str, tuple[str, ...]] = {}
for _words_, _material in _HEAD_GROUPS:
    for _word in _words_:
        HEAD_NOUNS.setdefault(_word, (_material,))

#: Words of a definition's head ("a large dog ..." -> "large dog") -> the kind's material.
KIND_WORDS: dict[str, str] = {
    # food
    "fruit": "fruit",
    "berry": "fruit",
    "citrus": "fruit",
    "melon": "fruit",
    "vegetable": "vegetable",
    "root": "vegetable",
    "tuber": "vegetable",
    "legume": "vegetable",
    "bean": "vegetable",
    "squash": "vegetable",
    "lettuce": "vegetable",
    "cabbage": "vegetable",
    "bread": "bread",
    "roll": "bread",
    "bun": "bread",
    "pastry": "bread",
    "cake": "bread",
    "cookie": "bread",
    "biscuit": "bread",
    "cracker": "bread",
    "pancake": "bread",
    "pie": "bread",
    "dough": "bread",
    "doughnut": "bread",
    "muffin": "bread",
    "waffle": "bread",
    "meat": "meat",
    "sausage": "meat",
    "beef": "meat",
    "pork": "meat",
    "ham": "meat",
    "bacon": "meat",
    "steak": "meat",
    "poultry": "meat",
    "fish": "meat",
    "seafood": "meat",
    "cheese": "cheese",
    "chocolate": "chocolate",
    "candy": "sugar",
    "confection": "sugar",
    "sweet": "sugar",
    "sweetmeat": "sugar",
    "dessert": "food",
    "dish": "cooked food",
    "food": "food",
    "sauce": "food",
    "condiment": "food",
    "soup": "cooked food",
    "stew": "cooked food",
    "sandwich": "cooked food",
    "salad": "food",
    "seed": "food",
    "nut": "food",
    "grain": "food",
    "cereal": "food",
    "snack": "food",
    "spread": "food",
    "relish": "food",
    "pudding": "food",
    "beverage": "liquid",
    "drink": "liquid",
    "juice": "liquid",
    "liquor": "liquid",
    "wine": "liquid",
    "beer": "liquid",
    "coffee": "liquid",
    "tea": "liquid",
    "soda": "liquid",
    # animals
    "mammal": "fur",
    "dog": "fur",
    "cat": "fur",
    "feline": "fur",
    "canine": "fur",
    "bear": "fur",
    "rodent": "fur",
    "monkey": "fur",
    "ape": "fur",
    "deer": "fur",
    "horse": "fur",
    "cattle": "fur",
    "bovid": "fur",
    "ruminant": "fur",
    "goat": "fur",
    "pig": "animal skin",
    "hog": "animal skin",
    "swine": "animal skin",
    "bird": "feather",
    "duck": "feather",
    "chicken": "feather",
    "fowl": "feather",
    "reptile": "animal skin",
    "lizard": "animal skin",
    "snake": "animal skin",
    "crocodilian": "animal skin",
    "turtle": "animal skin",
    "frog": "animal skin",
    "amphibian": "animal skin",
    "whale": "animal skin",
    "dolphin": "animal skin",
    "elephant": "animal skin",
    "rhinoceros": "animal skin",
    "hippopotamus": "animal skin",
    "insect": "animal skin",
    "beetle": "animal skin",
    "butterfly": "animal skin",
    "crustacean": "shell",
    "mollusk": "shell",
    "shellfish": "shell",
    # plants
    "plant": "foliage",
    "herb": "foliage",
    "shrub": "foliage",
    "vine": "foliage",
    "flower": "flower",
    "tree": "tree",
}

_HEAD_STOP = re.compile(
    r"\s(?:that|which|who|with|for|used|of|in|on|to|having|from|made|related|by|at|"
    r"containing|consisting|designed|worn|where|when|usually|often|typically|as)\s|[,;(]"
)
_MADE_OF = re.compile(
    r"\b(?:made|constructed|built|fashioned|formed|woven|knitted|consisting)"
    r"\s+(?:mainly\s+|chiefly\s+|mostly\s+|usually\s+|often\s+|typically\s+)?(?:of|from)\s+"
    r"(?:a\s+|an\s+|the\s+)?([a-z]+)"
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _def_head(definition: str) -> list[str]:
    text = " " + definition.lower().strip() + " "
    match = _HEAD_STOP.search(text)
    head = text[: match.start()] if match else text
    return [w for w in _words(head) if w not in ("a", "an", "the", "any", "one", "some")]


def _singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("ses", "s"), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    return word


def assign(category: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """The prior materials of one LVIS category and the rule that decided them (or unknown)."""
    name = str(category["name"])
    if name in CATEGORY_MATERIALS:
        materials = CATEGORY_MATERIALS[name]
        return (materials, "curated") if materials else ((), "unknown (curated)")
    names = [name, *category.get("synonyms", [])]
    for alias in names:
        base = alias.split("_(")[0]
        for word in base.lower().replace("-", "_").split("_")[:-1] or []:
            if word in NAME_WORDS:
                return (NAME_WORDS[word],), f"name word '{word}'"
    definition = str(category.get("def", "")).lower()
    made = _MADE_OF.search(definition)
    if made and made.group(1) in DEF_WORDS:
        return (DEF_WORDS[made.group(1)],), f"definition: '{made.group(0)}'"
    head = _def_head(definition)
    if len(head) >= 2 and head[0] in DEF_WORDS and head[0] not in ("sponge", "mirror"):
        return (DEF_WORDS[head[0]],), f"definition adjective '{head[0]}'"
    for alias in names:
        base = alias.split("_(")[0].lower().replace("-", "_")
        head_noun = base.split("_")[-1]
        for word in (head_noun, _singular(head_noun)):
            if word in HEAD_NOUNS:
                return HEAD_NOUNS[word], f"head noun '{word}'"
    for word in reversed(head):
        for w in (word, _singular(word)):
            if w in KIND_WORDS:
                return (KIND_WORDS[w],), f"kind '{w}' in definition"
    return (), "unknown"


def build_prior(categories: list[dict[str, Any]]) -> dict[str, Any]:
    """The prior table of a list of LVIS categories (see the module docstring)."""
    table: dict[str, Any] = {}
    unknown: list[str] = []
    for category in sorted(categories, key=lambda c: int(c["id"])):
        materials, rule = assign(category)
        materials = tuple(dict.fromkeys(canonical(m) for m in materials))
        if not materials:
            unknown.append(str(category["name"]))
            continue
        table[str(category["name"])] = {
            "id": int(category["id"]),
            "synset": str(category.get("synset", "")),
            "materials": list(materials),
            "rule": rule,
        }
    return {
        "version": PRIOR_VERSION,
        "source": "LVIS v1 categories (name, synonyms, def); rules of matbench.materials.prior",
        "num_categories": len(categories),
        "categories": table,
        "unknown": unknown,
    }


@lru_cache(maxsize=1)
def load_prior() -> dict[str, Any]:
    """The packaged prior table (``matbench/data/lvis_material_prior.json``)."""
    text = resources.files("matbench").joinpath("data", PRIOR_FILE).read_text(encoding="utf-8")
    table = json.loads(text)
    if table.get("version") != PRIOR_VERSION:
        raise ValueError(f"{PRIOR_FILE}: unsupported prior table version {table.get('version')}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matbench.materials.prior",
        description="Build the LVIS category -> material prior table from the category list.",
    )
    parser.add_argument(
        "--categories", required=True, help="lvis_v1_categories.json (or an LVIS annotation JSON)"
    )
    parser.add_argument("--out", required=True, help="output JSON")
    args = parser.parse_args(argv)
    path = Path(args.categories)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read the category list ({err})") from err
    categories = data["categories"] if isinstance(data, dict) else data
    table = build_prior(categories)
    Path(args.out).write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    known = len(table["categories"])
    print(
        f"{known}/{len(categories)} categories with a prior material, {len(table['unknown'])} unknown"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build and render one MatSeg 3D scene inside Blender: ``python blender_worker.py SPEC.json``
(or report the Cycles device a request gets: ``python blender_worker.py --device AUTO``).

Run by :mod:`matbench.synth.render` in a separate process with an interpreter that can
``import bpy`` (Blender as a Python module, or Blender's own Python). It imports only ``bpy``,
``mathutils`` and the standard library, never matbench, so any Blender 4.2-4.5 can run it.

Every random choice was made beforehand and is in the spec; this script only builds what the
spec says. Outputs in ``spec["out_dir"]``: ``rgb.png`` (the render), ``passes/<name>.f32``
(raw little-endian float32, bottom row first, one value per pixel) for each material-weight AOV
``mat000…`` and for ``objects`` (1 on every textured object), and ``camera.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from array import array

import bpy
from mathutils import Vector

# The names matbench.synth.render draws from (this script cannot import matbench).
PRIMITIVES = ("cube", "uv_sphere", "ico_sphere", "cylinder", "cone", "torus", "monkey")


def _new_node(tree, kind, **props):
    node = tree.nodes.new(kind)
    for key, value in props.items():
        setattr(node, key, value)
    return node


def _image_node(tree, path, non_color=True, extension="MIRROR"):
    image = bpy.data.images.load(path, check_existing=True)
    if non_color:
        image.colorspace_settings.name = "Non-Color"
    node = _new_node(tree, "ShaderNodeTexImage", image=image, extension=extension)
    return node


def _mapping(tree, uv_output, scale, rotation, offset):
    mapping = _new_node(tree, "ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (scale, scale, 1.0)
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, rotation)
    mapping.inputs["Location"].default_value = (offset[0], offset[1], 0.0)
    tree.links.new(uv_output, mapping.inputs["Vector"])
    return mapping.outputs["Vector"]


def _principled_input(bsdf, *names):
    for name in names:
        if name in bsdf.inputs:
            return bsdf.inputs[name]
    raise KeyError(f"Principled BSDF has none of the inputs {names}")


def _pbr_shader(tree, material, vector, flat):
    """One material's shader: a textured Principled BSDF, or a flat emission (ID render)."""
    if flat:
        emission = _new_node(tree, "ShaderNodeEmission")
        emission.inputs["Color"].default_value = (*material["flat_color"], 1.0)
        emission.inputs["Strength"].default_value = 1.0
        return emission.outputs["Emission"]
    links = tree.links
    bsdf = _new_node(tree, "ShaderNodeBsdfPrincipled")
    albedo = _image_node(tree, material["albedo"], non_color=False)
    links.new(vector, albedo.inputs["Vector"])
    links.new(albedo.outputs["Color"], bsdf.inputs["Base Color"])
    for key, names in (
        ("roughness", ("Roughness",)),
        ("metallic", ("Metallic",)),
        ("transmission", ("Transmission Weight", "Transmission")),
    ):
        node = _image_node(tree, material[key])
        links.new(vector, node.inputs["Vector"])
        links.new(node.outputs["Color"], _principled_input(bsdf, *names))
    normal_tex = _image_node(tree, material["normal"])
    links.new(vector, normal_tex.inputs["Vector"])
    normal_map = _new_node(tree, "ShaderNodeNormalMap")
    normal_map.inputs["Strength"].default_value = material.get("normal_gain", 1.0)
    links.new(normal_tex.outputs["Color"], normal_map.inputs["Color"])
    links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    return bsdf.outputs["BSDF"]


def _math(tree, operation, a, b):
    node = _new_node(tree, "ShaderNodeMath", operation=operation)
    for socket, value in ((node.inputs[0], a), (node.inputs[1], b)):
        if isinstance(value, float):
            socket.default_value = value
        else:
            tree.links.new(value, socket)
    return node.outputs["Value"]


def _aov(tree, name, value):
    node = _new_node(tree, "ShaderNodeOutputAOV")
    node.aov_name = name
    if isinstance(value, float):
        node.inputs["Value"].default_value = value
    else:
        tree.links.new(value, node.inputs["Value"])


def target_material(spec, placement):
    """The layered material of a textured object, with one weight AOV per scene material.

    Layer 0 covers the surface; layer k > 0 is blended over the layers below it by its soft map
    ``alpha_k``. The visible weight of layer i is ``alpha_i * prod_{j > i} (1 - alpha_j)``; the
    weights sum to 1 everywhere, so the AOVs partition the object's pixels.
    """
    mat = bpy.data.materials.new("matseg_target")
    mat.use_nodes = True
    tree = mat.node_tree
    tree.nodes.clear()
    out = _new_node(tree, "ShaderNodeOutputMaterial")
    uv = _new_node(tree, "ShaderNodeTexCoord").outputs["UV"]
    map_vector = _mapping(
        tree, uv, placement["map_scale"], placement["map_rotation"], placement["map_offset"]
    )
    alphas = [1.0]
    for path in spec["maps"][1:]:
        node = _image_node(tree, path)
        tree.links.new(map_vector, node.inputs["Vector"])
        alphas.append(node.outputs["Color"])
    shader = None
    for index, material in enumerate(spec["materials"]):
        tile = material["tile"]
        vector = _mapping(tree, uv, tile["scale"], tile["rotation"], tile["offset"])
        bsdf = _pbr_shader(tree, material, vector, spec["flat"])
        if shader is None:
            shader = bsdf
            continue
        mix = _new_node(tree, "ShaderNodeMixShader")
        tree.links.new(alphas[index], mix.inputs["Fac"])
        tree.links.new(shader, mix.inputs[1])
        tree.links.new(bsdf, mix.inputs[2])
        shader = mix.outputs["Shader"]
    tree.links.new(shader, out.inputs["Surface"])
    remaining = 1.0
    for index in range(len(spec["materials"]) - 1, -1, -1):
        alpha = alphas[index]
        weight = (
            remaining if isinstance(alpha, float) else _math(tree, "MULTIPLY", alpha, remaining)
        )
        _aov(tree, aov_name(index), weight)
        if not isinstance(alpha, float):
            remaining = _math(tree, "MULTIPLY", remaining, _math(tree, "SUBTRACT", 1.0, alpha))
    _aov(tree, "objects", 1.0)
    return mat


def aov_name(index):
    """Name of the weight AOV of scene material ``index``."""
    return f"mat{index:03d}"


def plain_material(name, colour, roughness, texture=None, scale=1.0, flat=False):
    """A background material (ground, occluders): not part of any mask."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    tree = mat.node_tree
    bsdf = tree.nodes.get("Principled BSDF")
    if flat:
        tree.nodes.clear()
        out = _new_node(tree, "ShaderNodeOutputMaterial")
        emission = _new_node(tree, "ShaderNodeEmission")
        emission.inputs["Color"].default_value = (*colour, 1.0)
        tree.links.new(emission.outputs["Emission"], out.inputs["Surface"])
        return mat
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    if texture:
        uv = _new_node(tree, "ShaderNodeTexCoord").outputs["UV"]
        node = _image_node(tree, texture, non_color=False)
        tree.links.new(_mapping(tree, uv, scale, 0.0, (0.0, 0.0)), node.inputs["Vector"])
        tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _select_only(objects):
    bpy.ops.object.select_all(action="DESELECT")
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[0]


def add_primitive(kind):
    ops = bpy.ops.mesh
    if kind == "cube":
        ops.primitive_cube_add(size=1.6)
    elif kind == "uv_sphere":
        ops.primitive_uv_sphere_add(radius=1.0, segments=48, ring_count=24)
    elif kind == "ico_sphere":
        ops.primitive_ico_sphere_add(radius=1.0, subdivisions=4)
    elif kind == "cylinder":
        ops.primitive_cylinder_add(radius=0.8, depth=1.8, vertices=48)
    elif kind == "cone":
        ops.primitive_cone_add(radius1=1.0, depth=1.8, vertices=48)
    elif kind == "torus":
        ops.primitive_torus_add(major_radius=0.9, minor_radius=0.35)
    elif kind == "monkey":
        ops.primitive_monkey_add(size=1.6)
    else:
        raise ValueError(f"unknown primitive {kind!r}; expected one of {PRIMITIVES}")
    obj = bpy.context.active_object
    canonical_topology(obj)
    if not obj.data.uv_layers:
        _smart_uv(obj)
    return obj


def canonical_topology(obj):
    """Rebuild the mesh of ``obj`` with its vertices, faces and loops in a canonical order.

    Blender does not build every mesh in the same order in every process: the UV sphere
    primitive (Blender 4.4) comes out with its edges, faces and loops in a different order
    each run, and subdivision and displacement of it then give other vertex orders and last-bit
    differences, so a scene would not render byte-identically. Vertices are sorted by position
    (ties by index), each face starts at its lowest vertex (orientation kept), faces are sorted
    by their vertex lists, and the active UV map follows its loops.
    """
    mesh = obj.data
    n_vertices, n_loops, n_faces = len(mesh.vertices), len(mesh.loops), len(mesh.polygons)
    coords = array("f", bytes(12 * n_vertices))
    mesh.vertices.foreach_get("co", coords)
    loop_vertex = array("i", bytes(4 * n_loops))
    mesh.loops.foreach_get("vertex_index", loop_vertex)
    starts = array("i", bytes(4 * n_faces))
    mesh.polygons.foreach_get("loop_start", starts)
    totals = array("i", bytes(4 * n_faces))
    mesh.polygons.foreach_get("loop_total", totals)
    uv_layer = mesh.uv_layers.active
    uvs = array("f", bytes(8 * n_loops))
    if uv_layer is not None:
        uv_layer.data.foreach_get("uv", uvs)
    points = [tuple(coords[3 * i : 3 * i + 3]) for i in range(n_vertices)]
    order = sorted(range(n_vertices), key=lambda i: (points[i], i))
    rank = [0] * n_vertices
    for new_index, old_index in enumerate(order):
        rank[old_index] = new_index
    faces = []
    for start, total in zip(starts, totals, strict=True):
        loops = [start + j for j in range(total)]
        first = min(range(total), key=lambda j: rank[loop_vertex[loops[j]]])
        loops = loops[first:] + loops[:first]
        faces.append(([rank[loop_vertex[k]] for k in loops], loops))
    faces.sort(key=lambda face: face[0])
    rebuilt = bpy.data.meshes.new(mesh.name)
    rebuilt.from_pydata([points[i] for i in order], [], [vertices for vertices, _ in faces])
    if uv_layer is not None:
        layer = rebuilt.uv_layers.new(name=uv_layer.name)
        layer.data.foreach_set(
            "uv", [uvs[2 * k + c] for _, loops in faces for k in loops for c in (0, 1)]
        )
    rebuilt.update()
    obj.data = rebuilt
    bpy.data.meshes.remove(mesh)


def _smart_uv(obj):
    _select_only([obj])
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    bpy.ops.uv.smart_project(island_margin=0.02)
    bpy.ops.object.mode_set(mode="OBJECT")


def import_mesh(path):
    """Import an OBJ/GLB/GLTF/PLY/STL file as one mesh object, centred and scaled to radius 1."""
    before = set(bpy.data.objects)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".obj":
        bpy.ops.wm.obj_import(filepath=path)
    elif ext in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=path)
    elif ext == ".ply":
        bpy.ops.wm.ply_import(filepath=path)
    elif ext == ".stl":
        bpy.ops.wm.stl_import(filepath=path)
    else:
        raise ValueError(f"{path}: unsupported mesh format {ext!r}")
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    for obj in new:
        if obj.type != "MESH":
            bpy.data.objects.remove(obj, do_unlink=True)
    if not meshes:
        raise ValueError(f"{path}: holds no mesh")
    _select_only(meshes)
    if len(meshes) > 1:
        bpy.ops.object.join()
    obj = bpy.context.active_object
    obj.parent = None
    bpy.ops.object.transform_apply(location=True, rotation=True, scale=True)
    corners = [Vector(v.co) for v in obj.data.vertices]
    if not corners:
        raise ValueError(f"{path}: mesh has no vertices")
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    centre = (lo + hi) / 2
    radius = max((c - centre).length for c in corners) or 1.0
    for vertex in obj.data.vertices:
        vertex.co = (vertex.co - centre) / radius
    obj.data.materials.clear()
    canonical_topology(obj)
    _smart_uv(obj)
    return obj


def add_modifiers(obj, modifiers):
    for index, mod in enumerate(modifiers):
        kind = mod["type"]
        if kind == "SUBSURF":
            m = obj.modifiers.new(f"m{index}", "SUBSURF")
            m.levels = m.render_levels = mod["levels"]
        elif kind == "DISPLACE":
            texture = bpy.data.textures.new(f"noise{obj.name}{index}", "CLOUDS")
            texture.noise_scale = mod["noise_scale"]
            m = obj.modifiers.new(f"m{index}", "DISPLACE")
            m.texture = texture
            m.strength = mod["strength"]
            m.texture_coords = "LOCAL"
        elif kind == "SIMPLE_DEFORM":
            m = obj.modifiers.new(f"m{index}", "SIMPLE_DEFORM")
            m.deform_method = mod["method"]
            m.deform_axis = mod["axis"]
            if mod["method"] in ("TWIST", "BEND"):
                m.angle = mod["amount"]
            else:
                m.factor = mod["amount"]
        else:
            raise ValueError(f"unknown modifier {kind!r}")


def place(obj, placement):
    obj.location = placement["location"]
    obj.rotation_euler = placement["rotation"]
    obj.scale = placement["scale"]
    if placement.get("smooth", True):
        _select_only([obj])
        bpy.ops.object.shade_smooth()


def build_world(env, flat):
    world = bpy.data.worlds.new("matseg_world")
    bpy.context.scene.world = world
    world.use_nodes = True
    tree = world.node_tree
    background = tree.nodes["Background"]
    # Importance map of the environment: Cycles' default (1024) costs seconds per scene.
    world.cycles.sampling_method = "MANUAL"
    world.cycles.sample_map_resolution = env.get("map_resolution", 256)
    if flat:
        background.inputs["Strength"].default_value = 0.0
        return
    background.inputs["Strength"].default_value = env["strength"]
    kind = env["kind"]
    if kind == "sky":
        sky = _new_node(tree, "ShaderNodeTexSky", sky_type="NISHITA")
        sky.sun_elevation = env["sun_elevation"]
        sky.sun_rotation = env["rotation"]
        sky.air_density = env["air"]
        sky.dust_density = env["dust"]
        tree.links.new(sky.outputs["Color"], background.inputs["Color"])
        return
    node = _new_node(tree, "ShaderNodeTexEnvironment")
    node.image = bpy.data.images.load(env["path"], check_existing=True)
    coords = _new_node(tree, "ShaderNodeTexCoord")
    mapping = _new_node(tree, "ShaderNodeMapping")
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, env["rotation"])
    tree.links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
    tree.links.new(mapping.outputs["Vector"], node.inputs["Vector"])
    tree.links.new(node.outputs["Color"], background.inputs["Color"])


def add_light(light):
    data = bpy.data.lights.new(f"light_{light['type']}", light["type"])
    data.energy = light["energy"]
    data.color = light["colour"]
    if light["type"] == "AREA":
        data.size = light["size"]
    obj = bpy.data.objects.new(data.name, data)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = light["location"]
    direction = Vector(light["target"]) - Vector(light["location"])
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def add_camera(camera, width, height):
    data = bpy.data.cameras.new("Camera")
    data.lens = camera["lens"]
    obj = bpy.data.objects.new("Camera", data)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = camera["location"]
    direction = Vector(camera["target"]) - Vector(camera["location"])
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    bpy.context.scene.camera = obj
    return {
        "name": "Camera",
        "Focal Length": data.lens,
        "Location": list(obj.location),
        "Rotation": list(obj.rotation_euler),
        "Perseption": data.type,
        "shift_x": data.shift_x,
        "shift_y": data.shift_y,
        "sensor_width": data.sensor_width,
        "sensor_height": data.sensor_height,
        "sensor_fit": data.sensor_fit,
        "resolution_y": height,
        "resolution_x": width,
        "pixel_aspect_x": 1.0,
        "pixel_aspect_y": 1.0,
        "resolution_percentage": 100,
        "scale": list(obj.scale),
    }


def choose_device(requested):
    """``CPU``, or the first GPU backend with a device for ``GPU``/``AUTO``."""
    scene = bpy.context.scene
    if requested == "CPU":
        scene.cycles.device = "CPU"
        return "CPU"
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"):
        try:
            prefs.compute_device_type = backend
        except TypeError:
            continue
        prefs.get_devices()
        gpus = [d for d in prefs.devices if d.type != "CPU"]
        if gpus:
            for device in prefs.devices:
                device.use = device.type != "CPU"
            scene.cycles.device = "GPU"
            return backend
    if requested == "GPU":
        raise RuntimeError("device GPU requested but Cycles finds no GPU")
    scene.cycles.device = "CPU"
    return "CPU"


def setup_render(spec):
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    width, height = spec["resolution"]
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.cycles.samples = spec["samples"]
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = bool(spec["denoise"])
    scene.cycles.seed = spec["seed"] % (2**31)
    scene.cycles.max_bounces = spec["max_bounces"]
    if spec["threads"]:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = spec["threads"]
    scene.view_settings.view_transform = "Standard" if spec["flat"] else "AgX"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.color_depth = "8"
    scene.render.filepath = os.path.join(spec["out_dir"], "rgb.png")
    return choose_device(spec["device"])


def setup_passes(spec):
    """Value AOVs for the material weights and the object coverage, written as float EXR."""
    scene = bpy.context.scene
    layer = scene.view_layers[0]
    names = [aov_name(i) for i in range(len(spec["materials"]))] + ["objects"]
    for name in names:
        aov = layer.aovs.add()
        aov.name = name
        aov.type = "VALUE"
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    layers = tree.nodes.new("CompositorNodeRLayers")
    composite = tree.nodes.new("CompositorNodeComposite")
    tree.links.new(layers.outputs["Image"], composite.inputs["Image"])
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.base_path = os.path.join(spec["out_dir"], "exr")
    output.format.file_format = "OPEN_EXR"
    output.format.color_depth = "32"
    output.format.color_mode = "BW"
    output.file_slots.clear()
    for name in names:
        output.file_slots.new(f"{name}_")
        tree.links.new(layers.outputs[name], output.inputs[f"{name}_"])
    return names


def dump_passes(spec, names):
    """EXR passes → raw float32 files (no numpy: any Blender Python can run this)."""
    frame = bpy.context.scene.frame_current
    folder = os.path.join(spec["out_dir"], "passes")
    os.makedirs(folder, exist_ok=True)
    for name in names:
        path = os.path.join(spec["out_dir"], "exr", f"{name}_{frame:04d}.exr")
        image = bpy.data.images.load(path)
        width, height = image.size
        channels = image.channels
        pixels = array("f", bytes(4 * width * height * channels))
        image.pixels.foreach_get(pixels)
        values = pixels[::channels] if channels > 1 else pixels
        if sys.byteorder != "little":
            values.byteswap()
        with open(os.path.join(folder, f"{name}.f32"), "wb") as handle:
            values.tofile(handle)
        bpy.data.images.remove(image)
        os.remove(path)


def build(spec):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    device = setup_render(spec)
    names = setup_passes(spec)
    for placement in spec["objects"]:
        obj = add_primitive(placement["primitive"]) if "primitive" in placement else None
        if obj is None:
            obj = import_mesh(placement["mesh"])
        add_modifiers(obj, placement["modifiers"])
        place(obj, placement)
        obj.data.materials.append(target_material(spec, placement))
    for index, occluder in enumerate(spec["occluders"]):
        obj = add_primitive(occluder["primitive"])
        place(obj, occluder)
        obj.data.materials.append(
            plain_material(
                f"occluder{index}",
                occluder["colour"],
                occluder["roughness"],
                occluder.get("texture"),
                occluder.get("texture_scale", 1.0),
                spec["flat"],
            )
        )
    ground = spec["ground"]
    if ground:
        bpy.ops.mesh.primitive_plane_add(size=ground["size"], location=(0.0, 0.0, ground["z"]))
        plane = bpy.context.active_object
        plane.data.materials.append(
            plain_material(
                "ground",
                ground["colour"],
                ground["roughness"],
                ground.get("texture"),
                ground.get("texture_scale", 1.0),
                spec["flat"],
            )
        )
    build_world(spec["environment"], spec["flat"])
    if not spec["flat"]:
        for light in spec["lights"]:
            add_light(light)
    width, height = spec["resolution"]
    camera = add_camera(spec["camera"], width, height)
    scene.frame_set(1)
    return device, names, camera


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[1] != "--device"):
        print("usage: python blender_worker.py SPEC.json | --device AUTO|CPU|GPU", file=sys.stderr)
        return 2
    major, minor = bpy.app.version[:2]
    if (major, minor) < (4, 2) or major >= 5:
        print(
            f"matbench needs Blender 4.2-4.5 (bpy), this is {bpy.app.version_string}",
            file=sys.stderr,
        )
        return 3
    if argv[1] == "--device":
        # Probe: which device a render with this request would use.
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.scene.render.engine = "CYCLES"
        try:
            device = choose_device(argv[2])
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 4
        sys.stdout.write(f"\nBLENDER {bpy.app.version_string}\nDEVICE {device}\n")
        return 0
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    start = time.perf_counter()
    device, names, camera = build(spec)
    bpy.ops.render.render(write_still=True)
    dump_passes(spec, names)
    with open(os.path.join(spec["out_dir"], "camera.json"), "w", encoding="utf-8") as handle:
        json.dump(camera, handle)
    info = {
        "device": device,
        "blender": bpy.app.version_string,
        "seconds": time.perf_counter() - start,
        "passes": names,
        "size": spec["resolution"],
    }
    with open(os.path.join(spec["out_dir"], "render.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

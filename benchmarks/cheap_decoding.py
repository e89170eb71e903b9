"""What decoding without the deblocking filter does to the model's input, against another everyday
perturbation: re-encoding the same frames once more (libx264 at its default CRF 23, as a camera, NVR
or transcoder does). PSNR of x3d_xs's input (short side 182, centre crop 182, before normalizing;
0-255 scale), over the first 300 frames, per video. A model's labels are not measured (no trained
weights here); this is what it is given. Results: benchmarks/streams.md.

    $ .venv/bin/python benchmarks/cheap_decoding.py VIDEO...
"""
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.live import _cheap_decoder  # noqa: E402 -- the decoder a live reader behind switches to
from pipelines.models import get_spec  # noqa: E402
from pipelines.transforms import resized_center_crop  # noqa: E402


def frames(path, cheap=False, limit=300):
    """The first `limit` frames as RGB: decoded in full, or as a live reader that is behind decodes them."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            sys.exit(f"{path}: no video stream; give H.264 or HEVC video files")
        s = c.streams.video[0]
        decoder = _cheap_decoder(s) if cheap else s.codec_context
        out = []
        for packet in c.demux(s):
            for f in decoder.decode(None if packet.size == 0 else packet):
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= limit:
                break
        if not out:
            sys.exit(f"{path}: no frame could be decoded")
        return out[:limit], s.codec_context.name


def reencoded(imgs, fps=25):
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = imgs[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "23"}
        for img in imgs:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def model_input(imgs, spec):
    x = torch.from_numpy(np.stack(imgs))
    return resized_center_crop(x, spec.side_size, spec.crop_size)


def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


if len(sys.argv) < 2:
    sys.exit("usage: benchmarks/cheap_decoding.py VIDEO... (H.264 or HEVC files)")
spec = get_spec("x3d_xs")
for path in sys.argv[1:]:
    if not Path(path).is_file():
        sys.exit(f"{path}: not a file; give video files")
    try:
        full, codec = frames(path)
    except av.FFmpegError as e:
        sys.exit(f"{path}: cannot be decoded ({e}); give H.264 or HEVC video files")
    cheap, _ = frames(path, cheap=True)
    n = min(len(full), len(cheap))
    again = reencoded(full[:n])
    a, b, c = model_input(full[:n], spec), model_input(cheap[:n], spec), model_input(again[:n], spec)
    fa = np.stack(full[:n]).astype(np.float32)
    print(f"{path.split('/')[-1]} ({codec}, {full[0].shape[1]}x{full[0].shape[0]}, {n} frames): "
          f"full-size frames: no deblocking {psnr(fa, np.stack(cheap[:n]).astype(np.float32)):.1f} dB, "
          f"re-encoded {psnr(fa, np.stack(again[:n]).astype(np.float32)):.1f} dB; "
          f"model input: no deblocking {psnr(a, b):.1f} dB, re-encoded {psnr(a, c):.1f} dB", flush=True)

"""One small JPEG per segment, as a data: URI a report can inline: the frame at each given time.

    >>> uris = thumbnails("video.mp4", [0.8, 2.4, 4.0])      # doctest: +SKIP
    >>> uris[0][:23]
    'data:image/jpeg;base64,'

Decodes forward through the video, seeking ahead over long stretches without a wanted frame, so
a long video with few segments costs a few seeks, not a full decode.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence

from pipelines.errors import VideoError

HEIGHT = 96  # pixels: enough to tell scenes apart, ~4 KB each
QUALITY = 70
SEEK_AHEAD_S = 4.0  # a wanted frame further than this ahead is reached by seeking, not decoding


def thumbnails(video: str | os.PathLike, times: Sequence[float], height: int = HEIGHT) -> list[str]:
    """Data URIs of the first frame at or after each time (seconds from the video's first frame,
    as segment times are); times past the end get the last frame."""
    import av

    from pipelines.decode import frame_step, numbered, open_container

    source = os.fspath(video)
    container, stream = open_container(source, what="--video ")
    with container:
        time_base = stream.time_base
        start_pts = stream.start_time or 0
        width = max(2, round(stream.codec_context.width * height / max(stream.codec_context.height, 1)) // 2 * 2)
        order = sorted(range(len(times)), key=lambda i: times[i])
        uris: list[str | None] = [None] * len(times)
        step = frame_step(container, stream)  # raw H.264: frames numbered from the start, so no seeking
        frames, last, position, ended = numbered(container.decode(stream), step), None, 0.0, False
        picture: tuple = (None, "")  # (frame, its JPEG): a frame wanted twice is encoded once
        try:
            for i in order:
                wanted = times[i]
                if not ended and not step and wanted - position > SEEK_AHEAD_S:
                    container.seek(start_pts + int(wanted / time_base), stream=stream, backward=True)
                    frames = container.decode(stream)
                while not ended and (last is None or position < wanted):
                    frame = next(frames, None)
                    if frame is None:  # the end: later times get the last frame, without decoding again
                        ended = True
                    elif frame.pts is not None:
                        last, position = frame, float((frame.pts - start_pts) * time_base)
                if last is None:
                    raise VideoError(f"--video {source!r} has no frames")
                if picture[0] is not last:
                    picture = (last, _jpeg(last, width, height))
                uris[i] = picture[1]
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode --video {source!r} ({e}); the file may be corrupt") from None
    return uris


def _jpeg(frame, width: int, height: int) -> str:
    image = frame.to_image(width=width, height=height)  # scaled by FFmpeg, then one small PIL image
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

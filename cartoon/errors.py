"""Typed errors for bad input; the HTTP layer maps each to a status code."""


class CartoonError(Exception):
    """Base of every error caused by the caller's input.

    Attributes:
        code: a stable machine-readable name, echoed in HTTP error bodies.
    """

    code = "bad_input"


class NotAnImageError(CartoonError):
    """The bytes are not an image in any format we can recognise."""

    code = "not_an_image"


class CorruptImageError(CartoonError):
    """The header parses but the pixel data is truncated or broken."""

    code = "corrupt_image"


class UnsupportedFormatError(CartoonError):
    """A recognised image format that the service does not accept."""

    code = "unsupported_format"


class TooManyPixelsError(CartoonError):
    """The header declares more pixels than the configured limit."""

    code = "too_many_pixels"


class OutputTooLargeError(CartoonError):
    """The output would have a side longer than its format holds (WebP 16383 px, JPEG 65500)."""

    code = "output_too_large"


class TooManyPiecesError(CartoonError):
    """The background would need more UNet pieces than the configured limit."""

    code = "too_many_pieces"


class WeightsError(Exception):
    """A weights file is missing, unreadable or does not match the model."""


class DeviceError(Exception):
    """The configured device cannot be used: CUDA asked for where there is none."""


class DeviceOutOfMemoryError(Exception):
    """The GPU ran out of memory for a batch even after splitting it; worth a retry later.

    Attributes:
        code: a stable machine-readable name, echoed in HTTP error bodies.
    """

    code = "out_of_memory"


class TooLargeForDeviceError(Exception):
    """One piece alone does not fit in the GPU memory this replica may use; a retry cannot help.

    Attributes:
        code: a stable machine-readable name, echoed in HTTP error bodies.
    """

    code = "too_large_for_device"


class NotAVideoError(CartoonError):
    """The bytes are not a video in a container we take (MP4, MOV, Matroska, WebM), or hold no video stream."""

    code = "not_a_video"


class CorruptVideoError(CartoonError):
    """The container opens but its video cannot be decoded."""

    code = "corrupt_video"


class VideoTooLongError(CartoonError):
    """The video lasts longer than the configured limit."""

    code = "video_too_long"


class AudioNotMuxableError(CartoonError):
    """The source's audio cannot be copied into the asked output container (e.g. AAC into WebM)."""

    code = "audio_not_muxable"


class PoisonFrameError(CartoonError):
    """A video frame took a replica down, then the process it was tried in alone: the job stops."""

    code = "poison_frame"

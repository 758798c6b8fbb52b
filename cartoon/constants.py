"""Numbers the algorithm depends on, in one place."""

import numpy as np

# Side of the square aligned head crop the head model sees.
CROP_SIZE = 288

# Five reference points (x, y) of a face in the 288x288 aligned crop, from the
# DCT-Net "person image cartoon" pipeline: left eye centre, right eye centre, nose
# tip, left mouth corner, right mouth corner ("left" = the left side of the image).
REFERENCE_POINTS_68 = np.array(
    [
        [111.8, 137.6],
        [179.7, 137.3],
        [146.0, 176.3],
        [118.1, 216.1],
        [174.3, 215.8],
    ],
    dtype=np.float64,
)

# Where dlib's 5-point model lands in the same frame, in the model's point order:
# right-of-image eye outer and inner corner, left-of-image eye outer and inner
# corner, nose base. Calibrated by tools/calibrate_five_point.py: faces aligned with
# the 68-point path, the 5-point model's points averaged in that frame (12 faces;
# the crops' corners then differ by 4.6 px on average, of 288; recalibrated when the
# detector moved to normalised lightness at 1024 px, and when the MTCNN cascade came
# to find a variant's face that only a tilted pass used to: both shift boxes slightly).
REFERENCE_POINTS_5 = np.array(
    [
        [196.5, 141.8],
        [168.2, 142.5],
        [95.6, 141.4],
        [124.0, 142.8],
        [146.1, 194.3],
    ],
    dtype=np.float64,
)

# Feathered elliptical paste-back mask: semi-axes as fractions of the crop side
# and the width of the soft edge as a fraction of the crop side. The ramp must reach
# 0 well inside the crop (here 7 px from the top and bottom edges): near its edges
# the UNet sees zero padding and darkens, and a mask cut off by the crop's edge
# leaves a straight seam along it.
MASK_AXES = (0.37, 0.41)
MASK_FEATHER = 0.12

# Default downscaled long side for the HOG face detector. HOG needs a face of about
# 80 px: at 1024 that is a face of 125 px in a 1600 px group photo (at 640, 200 px
# were needed, and small faces in groups got no head pass); the cost grows with the
# pixel count (benchmarks.quality prints it).
DETECT_LONG_SIDE = 1024

# The UNet downsamples twice by 2, so whole-image inputs are padded to a multiple.
UNET_STRIDE = 4

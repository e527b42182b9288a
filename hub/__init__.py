"""REST hub: a real-time, streaming, audio-driven talking-head generator (arXiv 2512.11229).

Subpackages: ``hub.media`` (video/audio I/O), ``hub.face`` (face crops), ``hub.data`` (data
preparation and training datasets), ``hub.models`` (pure torch modules), ``hub.engine``
(streaming engine), ``hub.train`` (the common trainer).
"""

__version__ = "0.1.0"

FPS = 25  # every video inside the project runs at exactly 25 frames per second
SAMPLE_RATE = 16_000  # every audio signal inside the project is 16 kHz mono float32
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

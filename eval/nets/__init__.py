"""Network definitions of the evaluation models (SyncNet, FID Inception, I3D, ArcFace runner)."""

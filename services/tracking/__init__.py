"""Face tracking service: MediaPipe face detection and mesh, stable track ids, mouth movement."""

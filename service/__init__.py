"""facepose: 6DoF head pose and dense 3D face mesh as a service."""

__version__ = "0.1.0"

"""Looking inside a run: prediction maps over a micrograph, Grad-CAM inside a patch, and the
gallery of the report (the last step of the data flow, after evaluation)."""

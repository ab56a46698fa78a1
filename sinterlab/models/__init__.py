"""The MLP head that maps patch embeddings to process parameters."""

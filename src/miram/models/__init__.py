"""Models composed from ``layers``: the ViT encoder, the masked autoencoder (MAE/MIRAM) and MoCo-v3."""

"""The models: the UNet generator, the DCT-Net import, device and precision choices."""

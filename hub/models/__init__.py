"""Pure torch modules: video autoencoder, audio encoder, A2V diffusion transformer, KV cache."""

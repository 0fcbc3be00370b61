/** The model runner: Hugging Face Mamba and Mamba-2 checkpoints. */
export {};

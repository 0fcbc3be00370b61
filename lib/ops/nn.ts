/** Model building blocks (linear layers, norms, embeddings) used by the model runner. */
export {};

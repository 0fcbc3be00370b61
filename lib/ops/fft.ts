/** The fft family; see SPEC.md. */
export {};

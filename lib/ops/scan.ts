/** The scan family; see SPEC.md. */
export {};

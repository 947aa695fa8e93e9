"""A procedural scene world with exact ground truth: scenes, their captions and renders (`scenes`), and judges
that read every attribute back from pixels (`judges`). The basis of the synthetic track (docs/synthetic.md)."""

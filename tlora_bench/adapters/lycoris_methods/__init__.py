"""LyCORIS algorithms as tlora-bench methods ("lycoris:tlora-4"), through LyCORIS's own modules."""

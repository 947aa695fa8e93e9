"""PEFT tuners as tlora-bench methods ("peft:loha-16"): built, trained, saved and reloaded through PEFT's code."""

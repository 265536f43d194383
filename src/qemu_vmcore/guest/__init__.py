"""Guest-side view: the guest-physical address space and what lives in it."""

"""A clip: probe, decode and encode, face tracking, the temporal finish, the flicker metric."""

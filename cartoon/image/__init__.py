"""One picture: decode, faces, alignment, background tiles, styles and finish, compose."""

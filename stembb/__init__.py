"""stembb: RNA secondary-structure prediction by stem bounding boxes (shared logic)."""

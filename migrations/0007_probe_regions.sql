-- Health history per probe region: the region whose view of a backend flipped (activeHealthChecks.regions), NULL for the backend's own transitions.
ALTER TABLE health_events ADD COLUMN region TEXT;

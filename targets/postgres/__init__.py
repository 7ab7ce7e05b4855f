"""The ``postgres`` target: one pg_dump (custom format) per database, with an exact table manifest."""

"""When and how much: level calendars, level choice, retention. Pure logic, no I/O."""

"""The ``mysql`` target (MySQL 5.7/8.x, MariaDB 10.x): one dump per database, with an exact table manifest."""

"""Virtual meters: pure generators per protocol (``dsmr``, ``iec62056_21``) and the
I/O that serves them (``runner``)."""

"""One analysis on several processes (`oisp-analyze --workers N`, and each task of fleet mode): the
connections split into partitions, each analyzed by the same pipeline, the outputs merged back into
the one-process order, byte for byte."""

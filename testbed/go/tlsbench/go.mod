module oisp.test/tlsbench

go 1.19

module oisp.test/tlsbench

go 1.19

require oisp.test/selfsigned v0.0.0

replace oisp.test/selfsigned => ../selfsigned

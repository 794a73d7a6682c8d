module oisp.test/selfsigned

go 1.19

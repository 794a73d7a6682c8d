module oisp.test/tlsserver

go 1.19

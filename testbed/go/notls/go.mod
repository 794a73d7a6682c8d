module oisp.test/notls

go 1.19

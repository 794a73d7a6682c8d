module oisp.test/stackgrow

go 1.19

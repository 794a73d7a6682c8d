module oisp.test/aiclient

go 1.19

module gatekeepverify

go 1.19

module example.invalid/kiln-bench-go

go 1.19

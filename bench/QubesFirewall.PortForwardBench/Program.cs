using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/QubesFirewall.PortForwardBench -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(QubesFirewall.PortForwardBench.PortForwardBenchmarks).Assembly).Run(args);

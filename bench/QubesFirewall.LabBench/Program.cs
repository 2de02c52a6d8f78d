using System.Diagnostics;
using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

// Applies N port forwards on one hop (sys-net, whose client work is the target) in the network lab, two ways:
//  - generated: the script the engine generates for sys-net (one nft -a list, one nft -f - transaction);
//  - documented: the same rules the way the Qubes documentation adds them, one `nft add rule` process per rule
//    (plus `nft add chain` for the two chains and `nft insert rule` for the jump).
// Each run starts from sys-net's baseline ruleset (not timed). Reports the median wall time of each, the ratio,
// and how both scale from the smallest to the largest N.
//
//   sudo dotnet run -c Release --project bench/QubesFirewall.LabBench [-- --counts 10,25,50,100,200 --repeat 5]
//   sudo dotnet run -c Release --project bench/QubesFirewall.LabBench -- --smoke
var counts = new[] { 10, 25, 50, 100, 200 };
var repeat = 5;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--counts": counts = args[++i].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(); break;
        case "--repeat": repeat = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--smoke": counts = [10]; repeat = 1; break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
}

var options = new LabTopologyOptions
{
    Qubes = [new LabQube("sys-net", 2, null, ProvidesNetwork: true), new LabQube("work", 3, "sys-net")],
};
Console.WriteLine($"nft: {LabRun("nft", "--version").Trim()}; kernel {Environment.OSVersion.Version}; {Environment.ProcessorCount} CPUs; median of {repeat} run(s)");
using var lab = LabTopology.Create(options);
Console.WriteLine($"lab {lab.Prefix} built in {lab.SetupTime.TotalMilliseconds:F0} ms");
Console.WriteLine();
Console.WriteLine("| forwards | nft rules | generated (ms) | re-run (ms) | documented (ms) | nft processes (generated / documented) | documented / generated |");
Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|");
var results = new List<(int N, double Gen, double Rerun, double Doc)>();
foreach (var n in counts)
{
    var inventory = QubesXml.Parse(QubesXmlFor(n));
    var script = PortForwardPlanner.Export(inventory, "sys-net")!.Script;
    var documented = Documented(script);
    var nftProcesses = documented.Split('\n').Count(l => l.StartsWith("nft ", StringComparison.Ordinal));
    var rules = script.Split('\n').Count(l => l.StartsWith("add rule ", StringComparison.Ordinal));

    var gen = Median(repeat, () => { lab.Reboot("sys-net"); return Time(() => RunScript(lab, script)); });
    var generatedRuleset = lab.ListRuleset("sys-net");
    var rerun = Median(repeat, () => Time(() => RunScript(lab, script)));
    if (lab.ListRuleset("sys-net") != generatedRuleset) throw new InvalidOperationException("re-running the generated script changed the ruleset");
    var doc = Median(repeat, () => { lab.Reboot("sys-net"); return Time(() => RunScript(lab, documented)); });
    var same = lab.ListRuleset("sys-net") == generatedRuleset;
    results.Add((n, gen, rerun, doc));
    Console.WriteLine($"| {n} | {rules} | {gen:F1} | {rerun:F1} | {doc:F1} | 2 / {nftProcesses} | {doc / gen:F1}x{(same ? "" : " (rulesets differ!)")} |");
}
if (results.Count > 1)
{
    var (a, b) = (results[0], results[^1]);
    Console.WriteLine();
    Console.WriteLine($"Scaling {a.N} -> {b.N} forwards ({(double)b.N / a.N:F0}x the rules): generated {b.Gen / a.Gen:F2}x the time, documented {b.Doc / a.Doc:F2}x.");
    Console.WriteLine($"Per forward at {b.N}: generated {b.Gen / b.N:F2} ms, documented {b.Doc / b.N:F2} ms.");
}
return 0;

static double Time(Action action)
{
    var sw = Stopwatch.StartNew();
    action();
    return sw.Elapsed.TotalMilliseconds;
}

static double Median(int n, Func<double> sample)
{
    var xs = Enumerable.Range(0, n).Select(_ => sample()).Order().ToList();
    return xs[xs.Count / 2];
}

static void RunScript(LabTopology lab, string script)
{
    var file = Path.Combine(lab.WorkDir, "bench-" + Guid.NewGuid().ToString("N")[..8] + ".sh");
    File.WriteAllText(file, script);
    try { lab.Exec("sys-net", ["bash", file], stdin: null, timeout: TimeSpan.FromMinutes(5)).EnsureSuccess("bench script"); }
    finally { File.Delete(file); }
}

// The documented method with the generated rules: create the chains, then one `nft add rule` process per rule, then the jump.
static string Documented(string generated)
{
    var sb = new StringBuilder("#!/bin/sh\nset -e\n");
    sb.Append("nft add chain ip qubes qubesfw-dnat '{ type nat hook prerouting priority dstnat; policy accept; }'\n");
    sb.Append("nft add chain ip qubes qubesfw-forward\n");
    foreach (var line in generated.Split('\n').Where(l => l.StartsWith("add rule ", StringComparison.Ordinal)))
        sb.Append("nft '").Append(line.Replace("'", "'\\''", StringComparison.Ordinal)).Append("'\n");
    sb.Append("nft insert rule ip qubes custom-forward jump qubesfw-forward comment '\"qubesfirewall\"'\n");
    return sb.ToString();
}

static string QubesXmlFor(int count)
{
    var features = new StringBuilder();
    for (var i = 0; i < count; i++)
    {
        var port = (20000 + i).ToString(CultureInfo.InvariantCulture);
        features.Append($"<feature name=\"qubesfirewall.forward.tcp.{port}\">target={port} type=external allow=192.168.1.0/24</feature>");
    }
    return "<qubes><labels><label id=\"label-1\" color=\"0xcc0000\">red</label></labels><properties><property name=\"default_netvm\"></property></properties><domains>" +
        "<domain id=\"domain-0\" class=\"AdminVM\"><properties><property name=\"label\">red</property></properties><features/><tags/></domain>" +
        "<domain id=\"domain-2\" class=\"AppVM\"><properties><property name=\"label\">red</property><property name=\"name\">sys-net</property><property name=\"qid\">2</property><property name=\"provides_network\">True</property><property name=\"netvm\"></property></properties><features/><tags/></domain>" +
        $"<domain id=\"domain-3\" class=\"AppVM\"><properties><property name=\"label\">red</property><property name=\"name\">work</property><property name=\"qid\">3</property><property name=\"netvm\">sys-net</property></properties><features>{features}</features><tags/></domain>" +
        "</domains></qubes>";
}

static string LabRun(string file, string args)
{
    using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true })!;
    var s = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    return s;
}

using System.Diagnostics;
using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Io;
using Xunit.Abstractions;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Eight writers as separate pwsh processes (the staged module, pwsh from the repository's tool
/// manifest) add 200 distinct rules each to the same qube of one offline root at the same moment:
/// 12 with one Add-QubeFirewallRule call each and 188 piped in 4 batches of 47, so 16 locked
/// read-modify-writes per process (128 in all, interleaved) contend for firewall.xml's lock. Afterwards all 1,600 are there,
/// once each, after the rules that were there before and before the final catch-all, and the file is
/// valid and canonical. The live backend's counterpart (a change by someone else between the plan and
/// the re-read is refused): LiveFirewallCmdletTests.A_change_made_by_someone_else_between_the_plan_and_the_reread_is_refused
/// and AdminApiBackendTests.A_change_made_by_someone_else_between_plan_and_reread_is_refused.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ConcurrentWritersTests(ITestOutputHelper output) : IDisposable
{
    private const int Writers = 8;
    private const int SeparateCalls = 12;
    private const int Batches = 4;
    private const int BatchSize = 47;
    private const int Piped = Batches * BatchSize;

    private readonly SampleRootCopy _root = new();
    private readonly string _work = Path.Combine(Path.GetTempPath(), "qfw-writers-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        _root.Dispose();
        try { Directory.Delete(_work, recursive: true); } catch (IOException) { }
    }

    private const string WriterScript = """
        param([string] $Manifest, [string] $Root, [int] $Writer, [string] $Go, [int] $Separate, [int] $Batches, [int] $BatchSize)
        $ErrorActionPreference = 'Stop'
        Import-Module $Manifest
        $env:QUBESFW_ROOT = $Root
        function Rule([int] $i) { "action=accept dst4=10.$(100 + $Writer).$i.1 proto=tcp dstports=$(1000 + $i) comment=writer $Writer rule $i" }
        [Console]::Out.WriteLine('ready')
        while (-not (Test-Path $Go)) { Start-Sleep -Milliseconds 5 }
        for ($i = 0; $i -lt $Separate; $i++) { Add-QubeFirewallRule -VMName work -Rule (Rule $i) }
        for ($b = 0; $b -lt $Batches; $b++) {
            $first = $Separate + $b * $BatchSize
            $first..($first + $BatchSize - 1) | ForEach-Object { Rule $_ } | Add-QubeFirewallRule -VMName work
        }
        [Console]::Out.WriteLine('finished')
        """;

    [Fact]
    public void Eight_pwsh_processes_adding_200_rules_each_to_one_qube_lose_none()
    {
        Directory.CreateDirectory(_work);
        var script = Path.Combine(_work, "writer.ps1");
        File.WriteAllText(script, WriterScript);
        var go = Path.Combine(_work, "go");
        var firewall = _root.FirewallXml("work");
        var before = FirewallXml.Load(firewall).Rules.Select(r => r.Text).ToList();

        var watch = Stopwatch.StartNew();
        var processes = new List<(Process Process, StringBuilder Out, StringBuilder Err)>();
        using var allReady = new CountdownEvent(Writers);
        for (var w = 0; w < Writers; w++)
        {
            var info = new ProcessStartInfo(DotnetHost(),
                ["pwsh", "-NoProfile", "-NonInteractive", "-File", script, "-Manifest", Repo.StagedManifest, "-Root", _root.Path,
                 "-Writer", w.ToString(CultureInfo.InvariantCulture), "-Go", go, "-Separate", SeparateCalls.ToString(CultureInfo.InvariantCulture),
                 "-Batches", Batches.ToString(CultureInfo.InvariantCulture), "-BatchSize", BatchSize.ToString(CultureInfo.InvariantCulture)])
            {
                WorkingDirectory = Repo.Root, // where dotnet-tools.json pins pwsh
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            // Never the live backend, whatever another test set in this process's environment.
            info.Environment.Remove("QUBESFW_QUBESD_SOCKET");
            info.Environment["QUBESFW_ROOT"] = _root.Path;
            info.Environment["NO_COLOR"] = "1";
            var process = new Process { StartInfo = info };
            var stdout = new StringBuilder();
            var stderr = new StringBuilder();
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (stdout) stdout.AppendLine(e.Data);
                if (e.Data == "ready") allReady.Signal();
            };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            processes.Add((process, stdout, stderr));
        }
        try
        {
            Assert.True(allReady.Wait(TimeSpan.FromSeconds(60)), "not every writer started: " + string.Join("\n", processes.Select(p => p.Err.ToString())));
            var started = watch.Elapsed;
            File.WriteAllText(go, ""); // all eight start writing at once
            foreach (var (process, _, _) in processes)
                Assert.True(process.WaitForExit(TimeSpan.FromSeconds(90)), "a writer did not finish in time");
            var writing = watch.Elapsed - started;
            foreach (var (process, stdout, stderr) in processes)
            {
                process.WaitForExit();
                Assert.True(process.ExitCode == 0 && stderr.Length == 0, $"writer exited with {process.ExitCode}: {stderr}");
                Assert.Contains("finished", stdout.ToString(), StringComparison.Ordinal);
            }
            output.WriteLine($"{Writers} pwsh writers, {Writers * (SeparateCalls + Piped)} rules ({Writers * (SeparateCalls + Batches)} locked read-modify-writes of firewall.xml): start {started.TotalSeconds:0.0} s, writing {writing.TotalSeconds:0.0} s");
        }
        finally
        {
            foreach (var (process, _, _) in processes)
            {
                if (!process.HasExited) process.Kill(entireProcessTree: true);
                process.Dispose();
            }
        }

        // Every rule is there exactly once; the rules from before keep their order, the catch-all stays last.
        var text = File.ReadAllText(firewall);
        var doc = FirewallXml.Load(firewall);
        Assert.Equal(text, FirewallXml.Render(doc.Rules, DateTimeOffset.UtcNow));
        var rules = doc.Rules.Select(r => r.Text).ToList();
        Assert.Equal(before.Count + Writers * (SeparateCalls + Piped), rules.Count);
        Assert.Equal(rules.Count, rules.Distinct(StringComparer.Ordinal).Count());
        for (var w = 0; w < Writers; w++)
            for (var i = 0; i < SeparateCalls + Piped; i++)
                Assert.Contains($"action=accept dst4=10.{100 + w}.{i}.1/32 proto=tcp dstports={1000 + i}-{1000 + i} comment=writer {w} rule {i}", rules);
        Assert.Equal(before, rules.Where(r => !r.Contains("comment=writer ", StringComparison.Ordinal)).ToList());
        Assert.Equal(before[^1], rules[^1]);
        // Each writer's separate calls landed in its own order.
        for (var w = 0; w < Writers; w++)
        {
            var mine = rules.Where(r => r.Contains($"comment=writer {w} rule ", StringComparison.Ordinal)).ToList();
            var order = mine.Select(r => int.Parse(r[(r.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture)).ToList();
            Assert.Equal(order.Order(), order);
        }
        Assert.DoesNotContain(Directory.GetFiles(Path.GetDirectoryName(firewall)!), f => AtomicFile.IsTemporaryName(Path.GetFileName(f)));
    }

    internal static string DotnetHost()
    {
        var self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        var root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        return "dotnet";
    }
}

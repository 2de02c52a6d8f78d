using System.Diagnostics;
using System.Globalization;
using System.Management.Automation;
using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Port forwards deployed into qubes on the live backend: the stand-in qubesd serves a copy of the sample
/// root (sys-firewall there is a disposable of default-dvm, which is halted), and a stand-in qvm-run on PATH
/// runs the module's fixed commands on files of its own, refuses qubes whose power state is not Running, and
/// runs the generated scripts with a stand-in nft that records each transaction.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveHopDeploymentCmdletTests : IDisposable
{
    private const string FwScript = "/rw/config/qubes-firewall-user-script";
    private const string UserLines = "#!/bin/sh\n# the user's own line\necho mine\n";
    private static readonly string OriginalPath = Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin";

    private readonly SampleRootCopy _root = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-hops-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly FakeQubesd _server;
    private readonly StandInQvmRun _qvmRun;

    public LiveHopDeploymentCmdletTests()
    {
        Directory.CreateDirectory(_dir);
        _server = new FakeQubesd(_root.Path, Path.Combine(_dir, "qubesd.sock"));
        _qvmRun = new StandInQvmRun(Path.Combine(_dir, "qvm-run"), powerStates: Path.Combine(_root.Path, "qubesfirewall-state"));
        _qvmRun.FakeNft();
    }

    public void Dispose()
    {
        _server.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        _root.Dispose();
    }

    private PsRun Run(string script) => PowerShellHost.Run(script, environment: new Dictionary<string, string>
    {
        ["QUBESFW_ROOT"] = "",
        ["QUBESFW_QUBESD_SOCKET"] = _server.SocketPath,
        ["PATH"] = _qvmRun.BinFolder + ":" + OriginalPath,
    });

    private static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    private IEnumerable<string> Started => _server.Calls.Where(c => c.Method == "admin.vm.Start").Select(c => c.Destination);

    /// <summary>The qubes whose files the stand-in qvm-run wrote (each write is a fixed command ending in the target path).</summary>
    private IEnumerable<string> Writes => _qvmRun.Calls.Where(c => c.Args[^1].Contains("mktemp", StringComparison.Ordinal)).Select(c => c.Args[7]);

    [Fact]
    public void Halted_qubes_on_the_way_are_refused_by_name_and_nothing_changes()
    {
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -PassThru");
        var error = Assert.Single(run.Errors);
        Assert.Equal(Fqid("QubesNotRunning", "AddQubePortForward"), error.FullyQualifiedErrorId);
        Assert.Contains("default-dvm (halted)", error.ToString());
        Assert.Contains("-Start", error.ToString());
        Assert.Equal(["default-dvm"], Assert.IsAssignableFrom<IEnumerable<string>>(error.TargetObject));
        Assert.Empty(run.Output);
        Assert.Equal(0, _server.CountCalls("admin.vm.feature.Set"));
        Assert.Empty(Started);
        Assert.Empty(Writes);
    }

    [Fact]
    public void Start_starts_the_halted_ones_outermost_first_then_deploys_every_hop()
    {
        foreach (var q in new[] { "sys-net", "sys-firewall", "work" }) _server.SetPowerState(q, PowerState.Halted);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -PassThru -Verbose");
        run.AssertNoErrors();
        Assert.Equal(["sys-net", "sys-firewall", "default-dvm", "work"], Started);
        Assert.Contains("Started sys-net, sys-firewall, default-dvm, work.", run.Verbose);
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal(["work", "sys-firewall", "sys-net"], hops.Select(h => h.VMName));
        Assert.All(hops, h => Assert.Equal((PortForwardHopStatus.Applied, true, 0), (h.Status, h.Executed, h.ExitCode!.Value)));
        var nft = File.ReadAllText(_qvmRun.NftLog);
        Assert.Equal(["work", "sys-firewall", "sys-net"], nft.Split('\n').Where(l => l.StartsWith("=== ", StringComparison.Ordinal)).Select(l => l[4..]));
        Assert.Contains("dnat to 10.138.10.201", _qvmRun.Read("sys-net", FwScript));
        Assert.Contains("dnat to 10.137.0.11", _qvmRun.Read("default-dvm", FwScript));
    }

    [Fact]
    public void A_hop_that_fails_puts_the_others_back_and_the_feature_with_them()
    {
        _server.SetPowerState("default-dvm", PowerState.Running);
        _qvmRun.Put("sys-net", FwScript, UserLines, Engine.Persistence.ManagedBlock.FileMode);
        _qvmRun.FailIn("sys-net", Engine.AdminApi.QubeFileCommands.RunStandardInput);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -PassThru");

        var error = Assert.Single(run.Errors);
        Assert.Equal(Fqid("PortForwardRolledBack", "AddQubePortForward"), error.FullyQualifiedErrorId);
        var message = error.ToString();
        Assert.Contains("boom in sys-net", message);
        Assert.Contains("Rolled back: feature qubesfirewall.forward.tcp.443 of work;", message);
        Assert.Contains("/rw/config/qubes-firewall-user-script of default-dvm", message);
        Assert.Contains("Nothing is left changed.", message);
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal([("work", PortForwardHopStatus.RolledBack), ("sys-firewall", PortForwardHopStatus.RolledBack), ("sys-net", PortForwardHopStatus.Failed)],
            hops.Select(h => (h.VMName, h.Status)));

        // Files as they were (the ones the forward created are gone), the feature set then removed again.
        Assert.Equal(UserLines, _qvmRun.Read("sys-net", FwScript));
        Assert.Null(_qvmRun.Read("default-dvm", FwScript));
        Assert.Null(_qvmRun.Read("work", "/rw/config/rc.local"));
        Assert.Equal(1, _server.CountCalls("admin.vm.feature.Set", "work"));
        Assert.Equal(1, _server.CountCalls("admin.vm.feature.Remove", "work"));
        var list = Run("Get-QubePortForward");
        list.AssertNoErrors();
        Assert.Empty(list.Output);
        // sys-net (whose run failed, maybe half way), then sys-firewall and work got their previous (empty) rules loaded again.
        var nft = File.ReadAllText(_qvmRun.NftLog).Split("=== ", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["work", "sys-firewall", "sys-net", "sys-firewall", "work"], nft.Select(n => n[..n.IndexOf('\n')]));
        Assert.Contains("dnat to 10.137.0.11", nft[1]);
        Assert.All(nft.Skip(2), n => Assert.DoesNotContain("dnat to", n));
    }

    [Fact]
    public void Progress_goes_over_the_hops()
    {
        _server.SetPowerState("default-dvm", PowerState.Running);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force");
        run.AssertNoErrors();
        var processing = run.Progress.Where(p => p.RecordType == ProgressRecordType.Processing).ToList();
        Assert.Equal(["work (1 of 3)", "sys-firewall (2 of 3)", "sys-net (3 of 3)"], processing.Select(p => p.StatusDescription).Distinct());
        Assert.All(processing, p => Assert.Equal("Add port forward tcp/443 -> work:443", p.Activity));
        Assert.Contains(processing, p => p.CurrentOperation.StartsWith("sys-net: run as root", StringComparison.Ordinal));
        Assert.Equal(ProgressRecordType.Completed, run.Progress[^1].RecordType);
    }

    [Fact]
    public void Remove_with_Start_reaches_the_halted_hops_first()
    {
        _server.SetPowerState("default-dvm", PowerState.Running);
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force").AssertNoErrors();
        _server.SetPowerState("default-dvm", PowerState.Halted);
        _server.SetPowerState("sys-net", PowerState.Halted);

        var refused = Run("Remove-QubePortForward work 443 -Confirm:$false");
        Assert.Equal(Fqid("QubesNotRunning", "RemoveQubePortForward"), Assert.Single(refused.Errors).FullyQualifiedErrorId);
        Assert.Contains("sys-net (halted), default-dvm (halted)", refused.Errors[0].ToString());

        var run = Run("Remove-QubePortForward work 443 -Start -Confirm:$false -PassThru");
        run.AssertNoErrors();
        Assert.Equal(["sys-net", "default-dvm"], Started);
        Assert.Equal(["sys-net", "sys-firewall", "work"], run.Of<PortForwardHopResult>().Select(h => h.VMName));
        Assert.DoesNotContain("qubesfirewall managed block", _qvmRun.Read("sys-net", FwScript));
    }

    [Fact]
    public void WhatIf_with_Start_says_what_it_would_start_and_starts_nothing()
    {
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -WhatIf");
        Assert.Empty(run.Errors);
        Assert.Contains(run.Warnings, w => w.Contains("only once default-dvm runs", StringComparison.Ordinal));
        Assert.Empty(Started);
        Assert.Empty(Writes);
    }
}

/// <summary>-Start and concurrent writers on an offline root (power states in its state folder).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class OfflineHopDeploymentCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run("$PSDefaultParameterValues = @{ '*-Qube*:Root' = $QubesRoot }\n" + script,
        root: null, variables: new Dictionary<string, object?> { ["QubesRoot"] = _root.Path });

    private string PowerState(string qube)
    {
        var file = Path.Combine(_root.Path, "qubesfirewall-state", qube, "power-state");
        return File.Exists(file) ? File.ReadAllText(file).Trim() : "(none: halted)";
    }

    private void Halt(string qube) => File.WriteAllText(Path.Combine(_root.Path, "qubesfirewall-state", qube, "power-state"), "Halted\n");

    [Fact]
    public void Without_Start_halted_qubes_keep_their_state_and_get_their_files()
    {
        Halt("sys-net");
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -PassThru");
        run.AssertNoErrors();
        Assert.All(run.Of<PortForwardHopResult>(), h => Assert.Equal(PortForwardHopStatus.Recorded, h.Status));
        Assert.Equal("Halted", PowerState("sys-net"));
        Assert.Equal("(none: halted)", PowerState("default-dvm"));
        Assert.True(File.Exists(Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "rw", "config", "qubes-firewall-user-script")));
    }

    [Fact]
    public void Start_records_each_halted_qube_as_running_outermost_first()
    {
        foreach (var q in new[] { "sys-net", "sys-firewall", "work" }) Halt(q);
        var whatIf = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -WhatIf");
        whatIf.AssertNoErrors();
        Assert.Equal("Halted", PowerState("sys-net"));

        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -Verbose");
        run.AssertNoErrors();
        Assert.Contains("Started sys-net, sys-firewall, default-dvm, work.", run.Verbose);
        foreach (var q in new[] { "sys-net", "sys-firewall", "default-dvm", "work" }) Assert.Equal("Running", PowerState(q));
        Assert.Equal("(none: halted)", PowerState("untrusted"));
    }

    [Fact]
    public void A_binding_with_Start_starts_the_client()
    {
        var run = Run("Add-QubeTcpBinding -From untrusted -To work -Port 444 -Permanent -Start -Verbose");
        run.AssertNoErrors();
        Assert.Contains("Started untrusted.", run.Verbose);
        Assert.Equal("Running", PowerState("untrusted"));
        Assert.Contains(run.Progress, p => p.StatusDescription == "untrusted (1 of 2)");
    }

    private const string WriterScript = """
        param([string] $Manifest, [string] $Root, [int] $Port, [string] $Target, [string] $Go)
        $ErrorActionPreference = 'Stop'
        Import-Module $Manifest
        [Console]::Out.WriteLine('ready')
        while (-not (Test-Path $Go)) { Start-Sleep -Milliseconds 5 }
        Add-QubePortForward -Root $Root -VMName $Target -Port $Port -AllowFrom 10.0.0.0/8 -Force -WarningAction SilentlyContinue
        [Console]::Out.WriteLine('finished')
        """;

    [Fact]
    public void Pwsh_processes_adding_forwards_through_the_same_hops_at_once_lose_none()
    {
        const int Writers = 4;
        var work = Path.Combine(Path.GetTempPath(), "qfw-fwd-writers-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(work);
        var script = Path.Combine(work, "writer.ps1");
        File.WriteAllText(script, WriterScript);
        var go = Path.Combine(work, "go");
        var processes = new List<(Process Process, StringBuilder Err)>();
        using var ready = new CountdownEvent(Writers);
        try
        {
            for (var w = 0; w < Writers; w++)
            {
                var info = new ProcessStartInfo(ConcurrentWritersTests.DotnetHost(),
                    ["pwsh", "-NoProfile", "-NonInteractive", "-File", script, "-Manifest", Repo.StagedManifest, "-Root", _root.Path,
                     "-Port", (7000 + w).ToString(CultureInfo.InvariantCulture), "-Target", w % 2 == 0 ? "work" : "personal", "-Go", go])
                {
                    WorkingDirectory = Repo.Root,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                };
                info.Environment.Remove("QUBESFW_QUBESD_SOCKET");
                info.Environment["NO_COLOR"] = "1";
                var process = new Process { StartInfo = info };
                var err = new StringBuilder();
                process.OutputDataReceived += (_, e) => { if (e.Data == "ready") ready.Signal(); };
                process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (err) err.AppendLine(e.Data); };
                process.Start();
                process.BeginOutputReadLine();
                process.BeginErrorReadLine();
                processes.Add((process, err));
            }
            Assert.True(ready.Wait(TimeSpan.FromSeconds(90)), "not every writer started");
            File.WriteAllText(go, "");
            foreach (var (process, err) in processes)
            {
                Assert.True(process.WaitForExit(TimeSpan.FromSeconds(120)), "a writer did not finish in time");
                process.WaitForExit();
                Assert.True(process.ExitCode == 0 && err.Length == 0, $"writer exited with {process.ExitCode}: {err}");
            }
        }
        finally
        {
            foreach (var (process, _) in processes)
            {
                if (!process.HasExited) process.Kill(entireProcessTree: true);
                process.Dispose();
            }
            Directory.Delete(work, recursive: true);
        }

        var list = Run("Get-QubePortForward");
        list.AssertNoErrors();
        Assert.Equal(Enumerable.Range(7000, Writers), list.Of<QubePortForward>().Select(f => f.Port!.Value).Order());
        var sysNet = File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "rw", "config", "qubes-firewall-user-script"));
        var sysFirewall = File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "default-dvm", "rw", "config", "qubes-firewall-user-script"));
        for (var w = 0; w < Writers; w++)
        {
            Assert.Contains($"tcp dport {7000 + w} dnat", sysNet);
            Assert.Contains($"tcp dport {7000 + w} dnat", sysFirewall);
        }
    }
}

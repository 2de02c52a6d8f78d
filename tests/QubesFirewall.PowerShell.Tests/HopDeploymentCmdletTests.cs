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
/// Port forwards deployed on the live backend: the stand-in qubesd serves a copy of the sample root (sys-firewall
/// there is a disposable of default-dvm, which is halted), and a stand-in qvm-run on PATH, which refuses qubes whose
/// power state is not Running, answers each running qube's agent status read as a running agent would: a change is
/// feature calls, then one status read per running qube; nothing is written into a qube.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveHopDeploymentCmdletTests : IDisposable
{
    private const string FwScript = "/rw/config/qubes-firewall-user-script";
    private const string UserLines = "#!/bin/sh\n# the user's own line\necho mine\n";
    private readonly LiveSampleSystem _live = new();

    public LiveHopDeploymentCmdletTests() => _live.QvmRun.FakeNft();

    public void Dispose() => _live.Dispose();

    private PsRun Run(string script) => _live.Run(script);

    private static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    private Dictionary<string, string> Keys(string qube)
    {
        using var root = new Engine.Backends.OfflineRoot(_live.Root.Path);
        return root.GetInventory().Get(qube).Features.Where(f => Engine.Agent.AgentFeatures.IsAgentFeature(f.Key)).ToDictionary(f => f.Key, f => f.Value);
    }

    private IEnumerable<string> Started => _live.Server.Calls.Where(c => c.Method == "admin.vm.Start").Select(c => c.Destination);

    /// <summary>The qubes whose files the stand-in qvm-run wrote (each write is a fixed command ending in the target path).</summary>
    private IEnumerable<string> Writes => _live.QvmRun.Calls.Where(c => c.Args[^1].Contains("mktemp", StringComparison.Ordinal)).Select(c => c.Args[7]);

    [Fact]
    public void A_halted_qube_on_the_way_gets_its_keys_and_is_Pending_and_nothing_is_started()
    {
        _live.Server.SetPowerState("sys-firewall", PowerState.Halted);
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru");
        run.AssertNoErrors();
        Assert.Equal([("sys-firewall", PortForwardHopStatus.Pending), ("sys-net", PortForwardHopStatus.Applied), ("work", PortForwardHopStatus.Applied)],
            run.Of<PortForwardHopResult>().Select(h => (h.VMName, h.Status)));
        Assert.Equal(7, _live.Server.CountCalls("admin.vm.feature.Set"));
        Assert.NotEmpty(Keys("sys-firewall"));
        Assert.Empty(Started);
        Assert.Empty(Writes);
        // -Start is no parameter of the forward cmdlets any more: nothing has to run
        Assert.Equal(Fqid("NamedParameterNotFound", "AddQubePortForward"),
            Assert.Single(Run("Add-QubePortForward work 444 -AllowFrom 192.168.1.0/24 -Start").Errors).FullyQualifiedErrorId);
    }

    [Fact]
    public void An_agent_that_fails_puts_every_feature_back_the_declaration_with_them()
    {
        _live.QvmRun.Put("sys-net", FwScript, UserLines, Engine.Persistence.ManagedBlock.FileMode);
        _live.AgentsAnswer(failIn: "sys-net");
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru");

        var error = Assert.Single(run.Errors);
        Assert.Equal(Fqid("PortForwardAgentFailed", "AddQubePortForward"), error.FullyQualifiedErrorId);
        var message = error.ToString();
        Assert.Contains("Could not process rule", message);
        Assert.Contains("Every feature was put back as it was.", message);
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal([("sys-firewall", PortForwardHopStatus.RolledBack), ("sys-net", PortForwardHopStatus.Failed), ("work", PortForwardHopStatus.RolledBack)],
            hops.Select(h => (h.VMName, h.Status)));

        // The features set, then removed again; nothing was ever written into a qube.
        Assert.Equal(7, _live.Server.CountCalls("admin.vm.feature.Set"));
        Assert.Equal(7, _live.Server.CountCalls("admin.vm.feature.Remove"));
        foreach (var q in new[] { "sys-net", "sys-firewall", "work" }) Assert.Empty(Keys(q));
        Assert.Equal(UserLines, _live.QvmRun.Read("sys-net", FwScript));
        Assert.Empty(Writes);
        var list = Run("Get-QubePortForward");
        list.AssertNoErrors();
        Assert.Empty(list.Output);
    }

    [Fact]
    public void Progress_goes_over_the_hops()
    {
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24");
        run.AssertNoErrors();
        var processing = run.Progress.Where(p => p.RecordType == ProgressRecordType.Processing).ToList();
        Assert.Equal(["sys-firewall", "sys-net", "work"], processing.Select(p => p.StatusDescription[..p.StatusDescription.IndexOf(' ', StringComparison.Ordinal)]).Distinct().Order(StringComparer.Ordinal));
        Assert.All(processing, p => Assert.EndsWith(" of 3)", p.StatusDescription, StringComparison.Ordinal));
        Assert.All(processing, p => Assert.Equal("Add port forward tcp/443 -> work:443", p.Activity));
        Assert.Contains(processing, p => p.CurrentOperation.StartsWith("sys-net: set feature vm-config.qubesfw.", StringComparison.Ordinal));
        Assert.Equal(ProgressRecordType.Completed, run.Progress[^1].RecordType);
    }

    [Fact]
    public void Remove_through_a_halted_hop_is_Pending_there_and_starts_nothing()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        _live.Server.SetPowerState("sys-net", PowerState.Halted);

        var run = Run("Remove-QubePortForward work 443 -Confirm:$false -PassThru");
        run.AssertNoErrors();
        Assert.Empty(Started);
        Assert.Equal([("sys-firewall", PortForwardHopStatus.Applied), ("sys-net", PortForwardHopStatus.Pending), ("work", PortForwardHopStatus.Applied)],
            run.Of<PortForwardHopResult>().Select(h => (h.VMName, h.Status)));
        Assert.Empty(Keys("sys-net"));
        Assert.Empty(Writes);
    }

    [Fact]
    public void WhatIf_sets_nothing_and_starts_nothing()
    {
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WhatIf");
        Assert.Empty(run.Errors);
        Assert.Empty(run.Warnings);
        Assert.Equal(0, _live.Server.CountCalls("admin.vm.feature.Set"));
        Assert.Empty(Started);
        Assert.Empty(Writes);
    }
}

/// <summary>Halted qubes and concurrent writers on an offline root (power states in its state folder).</summary>
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

    private string KeysOf(string qube)
    {
        using var root = new Engine.Backends.OfflineRoot(_root.Path);
        return string.Join("\n", root.GetInventory().Get(qube).Features.Where(f => Engine.Agent.AgentFeatures.IsAgentFeature(f.Key)).Select(f => f.Value));
    }

    private void Halt(string qube) => File.WriteAllText(Path.Combine(_root.Path, "qubesfirewall-state", qube, "power-state"), "Halted\n");

    [Fact]
    public void Halted_qubes_keep_their_state_and_get_their_keys()
    {
        Halt("sys-net");
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru");
        run.AssertNoErrors();
        Assert.All(run.Of<PortForwardHopResult>(), h => Assert.Equal(PortForwardHopStatus.Recorded, h.Status));
        Assert.Equal("Halted", PowerState("sys-net"));
        Assert.Equal("(none: halted)", PowerState("default-dvm"));
        Assert.False(File.Exists(Path.Combine(_root.Path, "qubesfirewall-state", "sys-net", "rw", "config", "qubes-firewall-user-script")));
        Assert.Contains(" nat=10.138.10.201 ", KeysOf("sys-net"));
    }

    [Fact]
    public void No_qube_is_started_for_a_forward()
    {
        foreach (var q in new[] { "sys-net", "sys-firewall", "work" }) Halt(q);
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WhatIf").AssertNoErrors();
        var run = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Verbose");
        run.AssertNoErrors();
        Assert.DoesNotContain(run.Verbose, v => v.StartsWith("Started", StringComparison.Ordinal));
        foreach (var q in new[] { "sys-net", "sys-firewall", "work" }) Assert.Equal("Halted", PowerState(q));
        Assert.Equal("(none: halted)", PowerState("default-dvm"));
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
        Add-QubePortForward -Root $Root -VMName $Target -Port $Port -AllowFrom 10.0.0.0/8 -WarningAction SilentlyContinue
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
        var sysNet = KeysOf("sys-net");
        var sysFirewall = KeysOf("sys-firewall");
        for (var w = 0; w < Writers; w++)
        {
            Assert.Contains($" proto=tcp port={7000 + w} ", sysNet);
            Assert.Contains($" proto=tcp port={7000 + w} ", sysFirewall);
        }
        using (var root = new Engine.Backends.OfflineRoot(_root.Path))
        {
            var inventory = root.GetInventory(); // each qube's gen seals all four
            Assert.Empty(Engine.Agent.AgentFeatures.Changes(inventory, Engine.Agent.AgentFeatures.DeriveAll(inventory)));
        }
    }
}

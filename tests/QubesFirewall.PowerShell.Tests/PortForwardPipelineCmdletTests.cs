using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Planning;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Forwards piped into one Add-QubePortForward are one change, on the offline root and on the live backend (stand-in qubesd):
/// each record checked as it comes (a bad one errors alone), one plan that writes each qube's keys once, one ShouldProcess.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PortForwardPipelineCmdletTests : IDisposable
{
    private static readonly string[] OnTheWay = ["sys-firewall", "sys-net", "work"];
    private readonly SampleRootCopy _root = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-pipe-" + Guid.NewGuid().ToString("N")[..10]);
    private FakeQubesd? _server;

    public void Dispose()
    {
        _server?.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        _root.Dispose();
    }

    private void Open(bool live)
    {
        if (!live) return;
        Directory.CreateDirectory(_dir);
        _server = new FakeQubesd(_root.Path, Path.Combine(_dir, "qubesd.sock"));
    }

    // ten forwards to work, as a CSV would give them
    private const string Ten = "$records = 1..10 | ForEach-Object { [pscustomobject]@{ VMName = 'work'; Port = 20000 + $_; AllowFrom = '192.0.2.0/24' } }\n";

    private PsRun Run(string script) => _server is null
        ? PowerShellHost.Run("$PSDefaultParameterValues = @{ '*-Qube*:Root' = $QubesRoot }\n" + script, root: null,
            variables: new Dictionary<string, object?> { ["QubesRoot"] = _root.Path })
        : PowerShellHost.Run(script, environment: new Dictionary<string, string> { ["QUBESFW_ROOT"] = "", ["QUBESFW_QUBESD_SOCKET"] = _server.SocketPath });

    private int Sets(string? feature = null) =>
        _server!.Calls.Count(c => c.Method == "admin.vm.feature.Set" && (feature is null || c.Argument == feature));

    /// <summary>A qube's agent keys and forward declarations, read from the root's qubes.xml.</summary>
    private Dictionary<string, string> Features(string qube)
    {
        using var root = new OfflineRoot(_root.Path);
        return root.GetInventory().Get(qube).Features.Where(f => AgentFeatures.IsAgentFeature(f.Key) || f.Key.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal))
            .ToDictionary(f => f.Key, f => f.Value);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ten_piped_forwards_are_one_change_that_sets_each_qubes_gen_once_and_again_sets_nothing(bool live)
    {
        Open(live);
        var run = Run(Ten + "$records | Add-QubePortForward -NoWait -PassThru -Verbose");
        run.AssertNoErrors();
        // one result per qube (ten changes would give three each), each carrying the ten forwards, with the generation its gen key has
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal(OnTheWay, hops.Select(h => h.VMName));
        Assert.All(hops, h => Assert.Equal(10, h.Forwards));
        Assert.All(hops, h => Assert.Equal("10 port forwards", h.Forward));
        Assert.Equal(["hop 2 of 2", "hop 1 of 2", "target"], hops.Select(h => h.Role));
        foreach (var qube in OnTheWay)
        {
            // every key of the qube carries the one generation its gen key names
            var keys = Features(qube).Where(f => AgentFeatures.IsAgentFeature(f.Key)).ToDictionary();
            var gen = System.Text.RegularExpressions.Regex.Match(keys[AgentFeatures.GenFeature], " gen=([0-9a-f]{16})").Groups[1].Value;
            Assert.Equal(11, keys.Count);
            Assert.All(keys.Values, v => Assert.Contains($" gen={gen}", v));
        }
        Assert.Equal(10, Features("work").Keys.Count(k => k.StartsWith("qubesfirewall.forward.tcp.", StringComparison.Ordinal)));
        // the plan, once: the ten forwards, then the steps
        var plan = Assert.Single(run.Verbose, v => v.StartsWith("Add 10 port forwards, as one change:", StringComparison.Ordinal));
        Assert.Contains("    Add port forward tcp/20010 -> work:20010 (sys-net -> sys-firewall -> work)", plan);
        Assert.Single(run.Verbose, v => v.EndsWith(": done (3 qubes).", StringComparison.Ordinal));
        if (live)
        {
            Assert.Equal(3, Sets(AgentFeatures.GenFeature));
            Assert.Equal(3, _server!.Calls.Where(c => c.Method == "admin.vm.feature.Set" && c.Argument == AgentFeatures.GenFeature).Select(c => c.Destination).Distinct().Count());
            Assert.Equal(10 + 3 * 11, Sets()); // the declarations, then each qube's ten parts and gen
            _server.ClearCalls();
        }

        // the same pipeline again: nothing set
        var before = _root.Snapshot();
        Run(Ten + "$records | Add-QubePortForward -NoWait").AssertNoErrors();
        _root.AssertUnchanged(before);
        if (live) Assert.Equal(0, Sets());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_bad_record_errors_alone_and_WhatIf_sets_nothing(bool live)
    {
        Open(live);
        var before = _root.Snapshot();
        var whatIf = Run(Ten + "$records | Add-QubePortForward -NoWait -WhatIf");
        whatIf.AssertNoErrors();
        _root.AssertUnchanged(before);
        if (live)
        {
            Assert.Equal(0, Sets());
            // the calls the change would send, listed once: the declarations and each qube's keys
            Assert.Equal(10 + 3 * 11, whatIf.Information.Count(i => i.Contains("admin.vm.feature.Set", StringComparison.Ordinal)));
        }

        var bad = "$records += [pscustomobject]@{ VMName = 'nosuch'; Port = 20011; AllowFrom = '192.0.2.0/24' }, " +
            "[pscustomobject]@{ VMName = 'work'; Port = 20012 }, " + // no AllowFrom: it would be open to everyone
            "[pscustomobject]@{ VMName = 'personal'; Port = 20003; AllowFrom = '192.0.2.0/24' }, " + // work's 20003 takes that port through the same hops
            "[pscustomobject]@{ VMName = 'work'; Port = 20005; AllowFrom = '198.51.100.0/24' }\n"; // work's 20005 again: the later one is kept
        var run = Run(Ten + bad + "$records | Add-QubePortForward -NoWait -PassThru");
        Assert.Equal(["QubeNotFound", "AllowFromRequired", "PortAlreadyForwarded"],
            run.Errors.Select(e => e.FullyQualifiedErrorId.Split(',')[0]));
        Assert.Contains("given earlier in the same change", run.Errors[2].ToString());
        Assert.Contains(run.Warnings, w => w.Contains("tcp/20005 -> work:20005 was given before in this pipeline; the later one is kept.", StringComparison.Ordinal));
        Assert.Equal(OnTheWay, run.Of<PortForwardHopResult>().Select(h => h.VMName));
        var declared = Features("work").Where(f => f.Key.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal)).ToDictionary();
        Assert.Equal(Enumerable.Range(20001, 10).Select(p => $"qubesfirewall.forward.tcp.{p}").Order(), declared.Keys.Order());
        Assert.Contains("allow=198.51.100.0/24", declared["qubesfirewall.forward.tcp.20005"]);
        Assert.DoesNotContain(Features("personal").Keys, k => k.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal));

        // open to everyone: its own question (no host here can ask it: the pipeline stops, nothing is set), or said for it by name,
        // when it joins the others' change
        before = _root.Snapshot();
        Assert.Contains(Run("[pscustomobject]@{ VMName = 'work'; Port = 20014; AllowFrom = '192.0.2.0/24' }, [pscustomobject]@{ VMName = 'work'; Port = 20013; AllowFrom = 'Any' } | " +
            "Add-QubePortForward -NoWait").Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal));
        _root.AssertUnchanged(before);
        Run("[pscustomobject]@{ VMName = 'work'; Port = 20014; AllowFrom = '192.0.2.0/24' }, [pscustomobject]@{ VMName = 'work'; Port = 20013; AllowFrom = 'Any' } | " +
            "Add-QubePortForward -NoWait -Confirm:$false").AssertNoErrors();
        Assert.DoesNotContain("allow=", Features("work")["qubesfirewall.forward.tcp.20013"]);
        Assert.Contains("allow=192.0.2.0/24", Features("work")["qubesfirewall.forward.tcp.20014"]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Forwards_piped_into_Remove_are_one_change_and_a_forward_not_declared_errors_alone(bool live)
    {
        Open(live);
        Run(Ten + "$records | Add-QubePortForward -NoWait").AssertNoErrors();
        _server?.ClearCalls();
        var run = Run("@(Get-QubePortForward work) + [pscustomobject]@{ VMName = 'work'; Port = 20099 } | Remove-QubePortForward -NoWait -Confirm:$false -PassThru -Verbose");
        Assert.Equal("PortForwardNotFound", Assert.Single(run.Errors).FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(OnTheWay, run.Of<PortForwardHopResult>().Select(h => h.VMName)); // one result per qube, not ten
        Assert.Single(run.Verbose, v => v.StartsWith("Remove 10 port forwards, as one change:", StringComparison.Ordinal));
        Assert.All(OnTheWay, q => Assert.Empty(Features(q)));
        // live: each key removed once, gen included, then the ten declarations
        if (live) Assert.Equal(3 * 11 + 10, _server!.Calls.Count(c => c.Method == "admin.vm.feature.Remove"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Links_piped_into_Enable_and_Disable_are_one_change_and_a_bad_record_errors_alone(bool live)
    {
        Open(live);
        // vault has no network qube: refused alone; work and untrusted, both behind sys-firewall, to personal's 5432: one change
        var run = Run("'work', 'vault', 'untrusted' | ForEach-Object { [pscustomobject]@{ From = $_; To = 'personal'; Port = 5432 } } | " +
            "Enable-QubeInterVmNetwork -NoWait -PassThru -Verbose");
        Assert.Equal("NoNetVM", Assert.Single(run.Errors).FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(["untrusted", "work"], run.Of<QubeInterVmLink>().Select(l => l.From).Order());
        var plan = Assert.Single(run.Verbose, v => v.StartsWith("Enable inter-qube link ", StringComparison.Ordinal));
        Assert.Contains("work -> personal tcp/5432, untrusted -> personal tcp/5432 (through sys-firewall):", plan);
        if (live)
        {
            // sys-firewall's and personal's keys once each, for both links
            Assert.Equal(["personal", "sys-firewall"], _server!.Calls.Where(c => c.Method == "admin.vm.feature.Set" && c.Argument == AgentFeatures.GenFeature).Select(c => c.Destination).Order());
            Assert.Equal(["untrusted", "work"], _server.Calls.Where(c => c.Method == "admin.vm.firewall.Set").Select(c => c.Destination).Order());
            _server.ClearCalls();
        }

        var off = Run("Get-QubeInterVmNetwork | Disable-QubeInterVmNetwork -NoWait -Confirm:$false -PassThru -Verbose");
        off.AssertNoErrors();
        Assert.Single(off.Verbose, v => v.StartsWith("Disable inter-qube link ", StringComparison.Ordinal));
        Assert.Equal(["personal", "sys-firewall"], off.Of<PortForwardHopResult>().Select(h => h.VMName).Order()); // one result per qube, not one per link
        Assert.Empty(Run("Get-QubeInterVmNetwork").Of<QubeInterVmLink>());
        if (live) Assert.Equal(["personal", "sys-firewall"], _server!.Calls.Where(c => c.Method == "admin.vm.feature.Remove" && c.Argument == AgentFeatures.GenFeature).Select(c => c.Destination).Order());
    }
    [Fact]
    public void An_empty_TargetPort_cell_of_a_CSV_means_not_given_and_a_port_outside_1_65535_is_refused_by_the_binder()
    {
        // Import-Csv gives every column: a row without a target port has '' there
        var csv = Path.Combine(Path.GetTempPath(), "qfw-forwards-" + Guid.NewGuid().ToString("N")[..8] + ".csv");
        File.WriteAllText(csv, "VMName,Port,TargetPort,AllowFrom\nwork,8443,,192.0.2.0/24\nwork,8080,80,192.0.2.0/24\n");
        try
        {
            Run($"Import-Csv '{csv}' | Add-QubePortForward -NoWait").AssertNoErrors();
            var features = Features("work");
            Assert.Contains("target=8443 ", features["qubesfirewall.forward.tcp.8443"], StringComparison.Ordinal);
            Assert.Contains("target=80 ", features["qubesfirewall.forward.tcp.8080"], StringComparison.Ordinal);
        }
        finally { File.Delete(csv); }
        foreach (var bad in new[] { "0", "65536" })
        {
            var run = Run($"Add-QubePortForward work 9000 -TargetPort {bad} -AllowFrom 192.0.2.0/24 -NoWait");
            Assert.StartsWith("ParameterArgumentValidationError,", Assert.Single(run.Errors).FullyQualifiedErrorId, StringComparison.Ordinal);
        }
        Assert.DoesNotContain("qubesfirewall.forward.tcp.9000", Features("work").Keys);
    }
}


using QubesFirewall.TestQubesd;
using QubesFirewall.Engine.Configuration;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Export-, Test- and Invoke-QubeNetworkConfiguration on both backends: export, test (nothing), edit the file, test
/// (the drift, written here by hand from the edit), invoke, test (nothing), invoke again (no change).
/// </summary>
public abstract class NetworkConfigurationCmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-conf-" + Guid.NewGuid().ToString("N")[..10]);

    protected NetworkConfigurationCmdletTests() => Directory.CreateDirectory(_dir);

    public virtual void Dispose()
    {
        _root.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    protected abstract PsRun Run(string script);

    protected string File(string name) => Path.Combine(_dir, name);

    /// <summary>Replaces <paramref name="from"/> by <paramref name="to"/> once, inside the entry of <paramref name="qube"/>.</summary>
    protected static string EditQube(string text, string qube, string from, string to)
    {
        var start = text.IndexOf($"        '{qube}' = @{{\n", StringComparison.Ordinal);
        Assert.True(start >= 0, $"no entry for {qube}");
        var end = text.IndexOf("\n        }\n", start, StringComparison.Ordinal);
        var at = text.IndexOf(from, start, StringComparison.Ordinal);
        Assert.True(at >= 0 && at < end, $"'{from}' not in the entry of {qube}");
        return text[..at] + to + text[(at + from.Length)..];
    }

    private static readonly string[] WorkRulesEdited =
    [
        "action=accept specialtarget=dns",
        "action=accept proto=icmp",
        "action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https",
        "action=accept dst4=10.1.2.10/32 proto=tcp dstports=22-22 comment=build server ssh",
        "action=accept proto=tcp dstports=80-80",
        "action=accept proto=tcp dstports=443-443",
        "action=accept dst4=10.9.0.0/16 proto=udp dstports=53-53",
        "action=drop",
    ];

    private string EditedFile(string exported)
    {
        var text = exported;
        // work: one more rule before the drop, a forward and a link to personal
        text = EditQube(text, "work", "                'action=drop'\n", "                'action=accept dst4=10.9.0.0/16 proto=udp dstports=53-53'\n                'action=drop'\n");
        text = EditQube(text, "work", "Forwards = @()", "Forwards = @(\n                @{ Protocol = 'tcp'; Port = 443; TargetPort = 8443; Type = 'External'; AllowFrom = @('192.168.1.0/24') }\n            )");
        text = EditQube(text, "work", "Links = @()", "Links = @(\n                @{ To = 'personal'; Protocol = 'tcp'; Port = 5432 }\n            )");
        // untrusted: no network and a qubes.ConnectTCP binding to work instead; personal: IPv6 on
        text = EditQube(text, "untrusted", "NetVM = '(default)'", "NetVM = ''");
        text = EditQube(text, "untrusted", "Bindings = @()", "Bindings = @(\n                @{ To = 'work'; Port = 444; LocalPort = 10444; Permanent = $true }\n            )");
        text = EditQube(text, "personal", "IPv6 = 'Inherit'", "IPv6 = 'Enabled'");
        return text;
    }

    [Fact]
    public void Export_test_edit_test_invoke_test_invoke_again()
    {
        var file = File("net.psd1");
        Run($"Export-QubeNetworkConfiguration -Path '{file}'").AssertNoErrors();
        var exported = System.IO.File.ReadAllText(file);
        var clean = Run($"Test-QubeNetworkConfiguration -Path '{file}'");
        clean.AssertNoErrors();
        Assert.Empty(clean.Output);

        System.IO.File.WriteAllText(file, EditedFile(exported));
        var drift = Run($"Test-QubeNetworkConfiguration -Path '{file}'");
        drift.AssertNoErrors();
        var found = drift.Of<ConfigurationDrift>().Select(d => $"{d.VMName} {d.Kind} {d.Item} | {d.Expected} | {d.Actual}").ToList();
        string[] expected =
        [
            "personal IPv6  | Enabled | Inherit",
            "untrusted NetVM  | (none) | (default) = sys-firewall",
            "untrusted Binding work:444 | localport=10444 permanent=yes | ",
            // the link's accept for personal (10.137.0.10) goes before the drop, as Enable-QubeInterVmNetwork puts it
            "work Rules  | " + string.Join("\n", WorkRulesEdited[..7].Append("action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal").Append("action=drop")) +
                " | " + string.Join("\n", WorkRulesEdited.Where((_, i) => i != 6)),
            "work Forward tcp/443 | target=8443 type=external allow=192.168.1.0/24 | ",
            "work Link personal tcp/5432 | declared | ",
        ];
        Assert.Equal(expected.Length, found.Count);
        for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i], found[i]);

        var invoke = Run($"Invoke-QubeNetworkConfiguration -Path '{file}' -Confirm:$false -Verbose");
        invoke.AssertNoErrors();
        var plan = Assert.Single(invoke.Verbose, v => v.StartsWith("Apply the network configuration:", StringComparison.Ordinal));
        Assert.Contains("untrusted: set netvm to (none) (was (default) = sys-firewall): qvm-prefs untrusted netvm ''", plan);
        Assert.Contains("personal: Set feature ipv6 to '1' (IPv6 on): qvm-features personal ipv6 '1'", plan);
        Assert.Contains("work: set the Qubes firewall: remove 0 rule(s), add 2 (9 rules after)", plan);
        // declarations carry their qube's uuid (work and untrusted in the sample's qubes.xml); the file never does
        Assert.Contains("work: set feature qubesfirewall.forward.tcp.443 = 'uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b target=8443 type=external allow=192.168.1.0/24'", plan);
        Assert.Contains("untrusted: set feature qubesfirewall.tcp.work.444 = 'uuid=18a18eda-8704-53c7-97a0-e949a989b6fe localport=10444 permanent=yes'", plan);
        Assert.DoesNotContain("uuid", System.IO.File.ReadAllText(file), StringComparison.Ordinal);
        var after = Run($"Test-QubeNetworkConfiguration -Path '{file}'");
        after.AssertNoErrors();
        Assert.Empty(after.Output);

        // the system is what the file says, seen through the single cmdlets
        Assert.Null(Run("(Get-Qube untrusted).NetVM").Output.Single()?.BaseObject);
        Assert.Equal("fd09:24ef:4179::a89:a", Run("Set-QubeIPv6 sys-net $true; (Get-Qube personal).IPv6").Output.Single().ToString());
        Run("Set-QubeIPv6 sys-net -Inherit").AssertNoErrors();
        var forward = Run("Get-QubePortForward work").Of<QubePortForward>().Single();
        Assert.Equal((8443, "sys-net -> sys-firewall -> work"), (forward.TargetPort!.Value, forward.Path));
        Assert.Equal("work -> personal tcp/5432", Run("Get-QubeInterVmNetwork work").Output.Single().ToString());
        Assert.Equal("untrusted -> work:444 (listening on 127.0.0.1:10444 in untrusted)", Run("Get-QubeTcpBinding").Output.Single().ToString());

        var again = Run($"Invoke-QubeNetworkConfiguration -Path '{file}' -Confirm:$false -Verbose");
        again.AssertNoErrors();
        Assert.DoesNotContain(again.Verbose, v => v.StartsWith("Apply the network configuration:", StringComparison.Ordinal));
        Assert.Contains(again.Verbose, v => v.EndsWith("the system already matches the file; nothing to change.", StringComparison.Ordinal));
    }

    [Fact]
    public void WhatIf_lists_every_change_and_changes_nothing()
    {
        var file = File("net.psd1");
        Run($"Export-QubeNetworkConfiguration -Path '{file}'").AssertNoErrors();
        System.IO.File.WriteAllText(file, EditedFile(System.IO.File.ReadAllText(file)));
        var before = _root.Snapshot();
        var run = Run($"Invoke-QubeNetworkConfiguration -Path '{file}' -WhatIf");
        run.AssertNoErrors();
        _root.AssertUnchanged(before);
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Prune_removes_what_the_file_does_not_list_and_only_for_the_qubes_it_names()
    {
        Run("Add-QubePortForward -VMName work -Port 8080 -AllowFrom 10.0.0.0/8; Add-QubePortForward -VMName personal -Port 8081 -AllowFrom 10.0.0.0/8").AssertNoErrors();
        var file = File("work.psd1");
        Run($"Export-QubeNetworkConfiguration -VMName work -Path '{file}'").AssertNoErrors();
        System.IO.File.WriteAllText(file, System.IO.File.ReadAllText(file).Replace(
            "                @{ Protocol = 'tcp'; Port = 8080; TargetPort = 8080; Type = 'External'; AllowFrom = @('10.0.0.0/8') }\n", "", StringComparison.Ordinal));
        var drift = Run($"Test-QubeNetworkConfiguration '{file}'").Of<ConfigurationDrift>().Single();
        Assert.Equal(("work", DriftKind.Forward, "tcp/8080", (string?)null), (drift.VMName, drift.Kind, drift.Item, drift.Expected));
        Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false").AssertNoErrors();
        Assert.Single(Run($"Test-QubeNetworkConfiguration '{file}'").Output); // without -Prune the forward stays
        Run($"Invoke-QubeNetworkConfiguration '{file}' -Prune -Confirm:$false").AssertNoErrors();
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{file}'").Output);
        Assert.Equal(["personal"], Run("Get-QubePortForward").Of<QubePortForward>().Select(f => f.VMName));
    }

    [Fact]
    public void Leaving_the_Whonix_gateway_asks_on_its_own()
    {
        var file = File("anon.psd1");
        Run($"Export-QubeNetworkConfiguration anon-whonix -Path '{file}'").AssertNoErrors();
        System.IO.File.WriteAllText(file, EditQube(System.IO.File.ReadAllText(file), "anon-whonix", "NetVM = 'sys-whonix'", "NetVM = 'sys-firewall'"));
        var before = _root.Snapshot();
        var asked = Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false");
        Assert.Contains(asked.Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal)); // ShouldContinue
        _root.AssertUnchanged(before);
        Run($"Invoke-QubeNetworkConfiguration '{file}' -AllowGatewayChange -Confirm:$false").AssertNoErrors();
        Assert.Equal("sys-firewall", Run("(Get-Qube anon-whonix).NetVM").Output.Single().ToString());
    }

    [Fact]
    public void A_hostile_file_is_refused_with_its_line_and_nothing_changes()
    {
        var before = _root.Snapshot();
        var file = File("bad.psd1");
        System.IO.File.WriteAllText(file, "@{\n    Version = 1\n    Qubes = @{\n        'work' = @{\n            NetVM = \"$(Remove-Item -Recurse /)\"\n        }\n    }\n}\n");
        var run = Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false");
        var error = Assert.Single(run.Errors);
        Assert.Equal("InvalidConfiguration,QubesFirewall.PowerShell.Cmdlets.InvokeQubeNetworkConfigurationCommand", error.FullyQualifiedErrorId);
        Assert.Contains($"{file}: line 5: double-quoted strings are not read", error.ToString());
        System.IO.File.WriteAllText(file, "@{ Version = 1; Qubes = @{ 'work' = @{ Firewall = @('action=drop') } } }");
        Assert.Contains("line 1: unknown key 'Firewall' in qube 'work'", Run($"Test-QubeNetworkConfiguration '{file}'").Errors.Single().ToString());
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Copied_declarations_are_drift_of_their_own_adopted_when_listed_and_pruned_when_not()
    {
        // a clone of personal would carry these: bound to personal's uuid (30f0be04-...), not to work's
        const string personal = "uuid=30f0be04-363a-548e-b2e8-c23ae627912a ";
        var file = File("work.psd1");
        Run($"Export-QubeNetworkConfiguration work -Path '{file}'").AssertNoErrors();
        Run("Add-QubePortForward -VMName work -Port 8080 -AllowFrom 10.0.0.0/8").AssertNoErrors();
        Run($"Export-QubeNetworkConfiguration work -Path '{File("listed.psd1")}'").AssertNoErrors();
        Run("Remove-QubePortForward -VMName work -Port 8080 -Confirm:$false").AssertNoErrors();
        SetFeature("work", "qubesfirewall.forward.tcp.8080", personal + "target=8080 type=external allow=10.0.0.0/8");
        SetFeature("work", "qubesfirewall.tcp.mail.444", personal + "localport=444 permanent=no");

        var drift = Run($"Test-QubeNetworkConfiguration '{file}'").Of<ConfigurationDrift>().Select(d => $"{d.Kind} {d.Item} | {d.Expected} | {d.Actual}").ToList();
        Assert.Equal(
        [
            "Copied tcp/8080 |  | target=8080 type=external allow=10.0.0.0/8 (copied: bound to uuid 30f0be04-363a-548e-b2e8-c23ae627912a, not to this qube)",
            "Copied mail:444 |  | localport=444 permanent=no (copied: bound to uuid 30f0be04-363a-548e-b2e8-c23ae627912a, not to this qube)",
        ], drift);
        // the file that lists the forward adopts it: declared again, bound to work
        var listed = Run($"Test-QubeNetworkConfiguration '{File("listed.psd1")}'").Of<ConfigurationDrift>().ToList();
        Assert.Contains(listed, d => d.Kind == DriftKind.Copied && d.Item == "tcp/8080" && d.Expected == "target=8080 type=external allow=10.0.0.0/8");
        Run($"Invoke-QubeNetworkConfiguration '{File("listed.psd1")}' -Confirm:$false").AssertNoErrors();
        Assert.DoesNotContain(Run($"Test-QubeNetworkConfiguration '{File("listed.psd1")}'").Of<ConfigurationDrift>(), d => d.Item == "tcp/8080");
        Assert.Equal("uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b target=8080 type=external allow=10.0.0.0/8",
            Run("(Get-Qube work).Features['qubesfirewall.forward.tcp.8080']").Output.Single().ToString());
        // the first file does not list them: -Prune removes the forward and the copied binding
        Run($"Invoke-QubeNetworkConfiguration '{file}' -Prune -Confirm:$false").AssertNoErrors();
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{file}'").Output);
    }

    protected abstract void SetFeature(string qube, string name, string value);

    [Fact]
    public void Json_round_trips_the_same_as_psd1()
    {
        var json = File("net.json");
        Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24; Add-QubeTcpBinding -From untrusted -To work -Port 444").AssertNoErrors();
        Run($"Export-QubeNetworkConfiguration -Path '{json}'").AssertNoErrors();
        Assert.StartsWith("{\n  \"Version\": 1,", System.IO.File.ReadAllText(json));
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{json}'").Output);
        var psd1 = Run("Export-QubeNetworkConfiguration").Output.Single().ToString();
        var fromJson = ConfigurationReader.Read(System.IO.File.ReadAllText(json), ConfigurationFormat.Json);
        Assert.Equal(psd1, ConfigurationWriter.WritePsd1(fromJson));
    }
}

public sealed class OfflineNetworkConfigurationCmdletTests : NetworkConfigurationCmdletTests
{
    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    protected override void SetFeature(string qube, string name, string value)
    {
        using var root = new Engine.Backends.OfflineRoot(_root.Path);
        root.SetFeature(qube, name, value);
    }

    [Fact]
    public void A_failing_step_puts_back_everything_before_it()
    {
        var file = File("net.psd1");
        Run($"Export-QubeNetworkConfiguration -Path '{file}'").AssertNoErrors();
        var original = System.IO.File.ReadAllText(file);
        var edited = EditQube(original, "untrusted", "NetVM = '(default)'", "NetVM = 'sys-net'");
        edited = EditQube(edited, "personal", "IPv6 = 'Inherit'", "IPv6 = 'Disabled'");
        edited = EditQube(edited, "work", "Bindings = @()", "Bindings = @(\n                @{ To = 'personal'; Port = 444; LocalPort = 10444; Permanent = $true }\n            )");
        System.IO.File.WriteAllText(file, edited);
        // work's rc.local cannot be written: a directory stands where the file goes
        Directory.CreateDirectory(Path.Combine(_root.Path, "qubesfirewall-state", "work", "rw", "config", "rc.local"));
        var run = Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false");
        var error = Assert.Single(run.Errors);
        Assert.Equal("NetworkConfigurationRolledBack,QubesFirewall.PowerShell.Cmdlets.InvokeQubeNetworkConfigurationCommand", error.FullyQualifiedErrorId);
        Assert.Contains("Nothing is left changed.", error.ToString());
        System.IO.File.WriteAllText(file, original);
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{file}'").Output);
        Assert.Empty(Run("Get-QubeTcpBinding").Output);
    }
}

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveNetworkConfigurationCmdletTests : NetworkConfigurationCmdletTests
{
    private readonly LiveStandIn _live;

    public LiveNetworkConfigurationCmdletTests()
    {
        _live = new LiveStandIn(_root.Path, "qfw-conf-live-");
        // the edited file reaches default-dvm (the file of the disposable sys-firewall) and untrusted: they must run
        _live.Server.SetPowerState("default-dvm", PowerState.Running);
        _live.Server.SetPowerState("untrusted", PowerState.Running);
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override PsRun Run(string script) => PowerShellHost.Run(script, environment: _live.Environment);

    protected override void SetFeature(string qube, string name, string value)
    {
        using var backend = Engine.Backends.BackendSelector.Open(null, n => _live.Environment.GetValueOrDefault(n));
        backend.SetFeature(qube, name, value);
    }

    [Fact]
    public void Halted_qubes_are_refused_by_name_or_started_with_Start()
    {
        _live.Server.SetPowerState("untrusted", PowerState.Halted);
        var file = File("u.psd1");
        Run($"Export-QubeNetworkConfiguration untrusted -Path '{file}'").AssertNoErrors();
        System.IO.File.WriteAllText(file, EditQube(System.IO.File.ReadAllText(file), "untrusted", "Bindings = @()",
            "Bindings = @(\n                @{ To = 'work'; Port = 444; LocalPort = 10444; Permanent = $true }\n            )"));
        var before = _root.Snapshot();
        var refused = Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false");
        Assert.Equal("QubesNotRunning,QubesFirewall.PowerShell.Cmdlets.InvokeQubeNetworkConfigurationCommand", Assert.Single(refused.Errors).FullyQualifiedErrorId);
        Assert.Contains("untrusted (halted)", refused.Errors[0].ToString());
        _root.AssertUnchanged(before);
        _live.Server.ClearCalls();
        Run($"Invoke-QubeNetworkConfiguration '{file}' -Start -Confirm:$false").AssertNoErrors();
        Assert.Equal(1, _live.Server.CountCalls("admin.vm.Start", "untrusted"));
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{file}'").Output);
    }

    [Fact]
    public void A_call_qubesd_refuses_half_way_puts_back_everything_before_it()
    {
        var file = File("net.psd1");
        Run($"Export-QubeNetworkConfiguration -Path '{file}'").AssertNoErrors();
        var original = System.IO.File.ReadAllText(file);
        var edited = EditQube(original, "personal", "IPv6 = 'Inherit'", "IPv6 = 'Disabled'");
        edited = EditQube(edited, "untrusted", "NetVM = '(default)'", "NetVM = 'sys-net'");
        edited = EditQube(edited, "work", "                'action=drop'\n", "                'action=accept proto=udp dstports=53-53'\n                'action=drop'\n");
        edited = EditQube(edited, "untrusted", "Bindings = @()", "Bindings = @(\n                @{ To = 'work'; Port = 444; LocalPort = 10444; Permanent = $true }\n            )");
        System.IO.File.WriteAllText(file, edited);
        _live.Server.InjectFault(new Fault(FaultKind.ExceptionReply, "admin.vm.feature.Set", "untrusted", Message: "refused for the test"));
        var run = Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false");
        var error = Assert.Single(run.Errors);
        Assert.Equal("NetworkConfigurationRolledBack,QubesFirewall.PowerShell.Cmdlets.InvokeQubeNetworkConfigurationCommand", error.FullyQualifiedErrorId);
        Assert.Contains("refused for the test", error.ToString());
        // netvm, ipv6 and rules went through qubesd before the refusal, and were put back through it
        Assert.Equal(2, _live.Server.CountCalls("admin.vm.property.Set", "untrusted") + _live.Server.CountCalls("admin.vm.property.Reset", "untrusted"));
        System.IO.File.WriteAllText(file, original);
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{file}'").Output);
    }

    [Fact]
    public void The_netvm_goes_through_qubesd()
    {
        var file = File("u.psd1");
        Run($"Export-QubeNetworkConfiguration untrusted -Path '{file}'").AssertNoErrors();
        System.IO.File.WriteAllText(file, EditQube(System.IO.File.ReadAllText(file), "untrusted", "NetVM = '(default)'", "NetVM = 'sys-net'"));
        _live.Server.ClearCalls();
        Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false").AssertNoErrors();
        Assert.Equal(1, _live.Server.CountCalls("admin.vm.property.Set", "untrusted"));
        System.IO.File.WriteAllText(file, EditQube(System.IO.File.ReadAllText(file), "untrusted", "NetVM = 'sys-net'", "NetVM = '(default)'"));
        Run($"Invoke-QubeNetworkConfiguration '{file}' -Confirm:$false").AssertNoErrors();
        Assert.Equal(1, _live.Server.CountCalls("admin.vm.property.Reset", "untrusted"));
        Assert.Empty(Run($"Test-QubeNetworkConfiguration '{file}'").Output);
    }
}

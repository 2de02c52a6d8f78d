using System.Management.Automation;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>The port forward cmdlets through a hosted runspace: binding, pipelines, ShouldProcess, prompts, errors.</summary>
public sealed class PortForwardCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    // -Root through $PSDefaultParameterValues rather than $env:QUBESFW_ROOT: the environment is the
    // process's, shared with the test classes that run in parallel with this one.
    private PsRun Run(string script) => PowerShellHost.Run("$PSDefaultParameterValues = @{ '*-Qube*:Root' = $QubesRoot }\n" + script,
        root: null, variables: new Dictionary<string, object?> { ["QubesRoot"] = _root.Path });

    private string? StateFile(string qube, string path)
    {
        var file = Path.Combine(_root.Path, "qubesfirewall-state", qube, path.TrimStart('/'));
        return File.Exists(file) ? File.ReadAllText(file) : null;
    }

    /// <summary>A qube's agent keys (<c>vm-config.qubesfw.*</c>), one per line, read from the root's qubes.xml.</summary>
    private string Keys(string qube)
    {
        using var root = new Engine.Backends.OfflineRoot(_root.Path);
        return string.Join("\n", root.GetInventory().Get(qube).Features.Where(f => Engine.Agent.AgentFeatures.IsAgentFeature(f.Key)).Select(f => $"{f.Key}={f.Value}"));
    }

    private static string Fqid(string id, string cmdlet) => $"{id},QubesFirewall.PowerShell.Cmdlets.{cmdlet}Command";

    [Fact]
    public void A_qube_from_Get_Qube_gets_a_forward_and_PassThru_returns_each_hop()
    {
        var run = Run("Get-Qube work | Add-QubePortForward -Port 443 -AllowFrom 192.168.1.0/24 -PassThru");
        run.AssertNoErrors();
        var hops = run.Of<PortForwardHopResult>().ToList();
        Assert.Equal(["sys-firewall", "sys-net", "work"], hops.Select(h => h.VMName));
        Assert.All(hops, h => Assert.Equal(PortForwardHopStatus.Recorded, h.Status));
        Assert.Equal("sys-firewall", hops[0].StoredIn); // a disposable keeps its own keys: nothing goes into default-dvm
        Assert.Empty(run.Warnings);

        var forward = Assert.Single(Run("Get-QubePortForward").Of<QubePortForward>());
        Assert.Equal(("work", ForwardProtocol.Tcp, 443, 443, ForwardType.External), (forward.VMName, forward.Protocol!.Value, forward.Port!.Value, forward.TargetPort!.Value, forward.Type!.Value));
        Assert.Equal(["sys-net", "sys-firewall"], forward.Hops);
        Assert.Contains(" nat=10.138.10.201 ", Keys("sys-net"));
        Assert.Contains(" nat=10.137.0.11 ", Keys("sys-firewall"));
        Assert.Null(StateFile("sys-net", "/rw/config/qubes-firewall-user-script"));
        Assert.Null(StateFile("default-dvm", "/rw/config/qubes-firewall-user-script"));
    }

    [Fact]
    public void The_plan_is_one_ShouldProcess_that_shows_every_hop_file_and_command()
    {
        var before = _root.Snapshot();
        var whatIf = Run("Add-QubePortForward work 8443 -TargetPort 443 -AllowFrom 203.0.113.0/24 -WhatIf");
        whatIf.AssertNoErrors();
        _root.AssertUnchanged(before);

        var run = Run("Add-QubePortForward work 8443 -TargetPort 443 -AllowFrom 203.0.113.0/24 -Verbose -Confirm:$false");
        run.AssertNoErrors();
        var plan = Assert.Single(run.Verbose, v => v.StartsWith("Add port forward tcp/8443 -> work:443 (sys-net -> sys-firewall -> work):", StringComparison.Ordinal));
        Assert.Contains("1. work: set feature qubesfirewall.forward.tcp.8443 = 'uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b target=443 type=external allow=203.0.113.0/24'", plan);
        Assert.Contains("work: set feature vm-config.qubesfw.tgt4.", plan);
        Assert.Contains("sys-firewall: set feature vm-config.qubesfw.hop4.", plan);
        Assert.Contains("sys-net: set feature vm-config.qubesfw.gen = ", plan);
        Assert.Contains(" proto=tcp port=8443 to=443 in=up nat=10.137.0.11 ", plan);
        Assert.DoesNotContain("default-dvm", plan);
        Assert.DoesNotContain("/rw/config", plan);
    }

    [Fact]
    public void Running_the_same_Add_again_writes_nothing()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        var before = _root.Snapshot().Where(f => !f.Key.EndsWith("applied.log", StringComparison.Ordinal)).ToDictionary();
        var again = Run("Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Verbose");
        again.AssertNoErrors();
        Assert.Contains(again.Verbose, v => v.StartsWith("Reapply port forward", StringComparison.Ordinal));
        var after = _root.Snapshot().Where(f => !f.Key.EndsWith("applied.log", StringComparison.Ordinal)).ToDictionary();
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (file, bytes) in before) Assert.True(bytes.AsSpan().SequenceEqual(after[file]), $"{file} changed");
    }

    [Fact]
    public void A_disposable_on_the_way_needs_nothing_and_a_qube_without_the_agent_is_refused_by_name()
    {
        // sys-firewall is a disposable of default-dvm: its keys are its own, no -Force (the parameter is gone)
        Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
        Assert.Equal(Fqid("NamedParameterNotFound", "AddQubePortForward"),
            Assert.Single(Run("Add-QubePortForward -VMName work -Port 444 -AllowFrom 192.168.1.0/24 -Force").Errors).FullyQualifiedErrorId);

        var xml = Path.Combine(_root.Path, "qubes.xml");
        using (var root = new Engine.Backends.OfflineRoot(_root.Path)) root.RemoveFeature("sys-firewall", Engine.Agent.AgentScript.VersionFeature);
        var before = _root.Snapshot();
        var run = Run("Add-QubePortForward -VMName work -Port 8080 -AllowFrom 192.168.1.0/24");
        var error = Assert.Single(run.Errors);
        Assert.Equal(Fqid("QubeFirewallAgentMissing", "AddQubePortForward"), error.FullyQualifiedErrorId);
        Assert.Equal(ErrorCategory.InvalidOperation, error.CategoryInfo.Category);
        Assert.Contains("Install-QubeFirewallAgent -VMName sys-firewall (sys-firewall's is kept in its disposable template default-dvm; asked once)", error.ToString());
        Assert.Equal("sys-firewall", error.TargetObject);
        _root.AssertUnchanged(before);
        Assert.True(File.Exists(xml));
    }

    [Fact]
    public void A_port_open_to_everyone_needs_AllowFrom_Any_and_is_asked_at_high_impact_never_by_Force()
    {
        // a root without a disposable on the way
        var xml = File.ReadAllText(Path.Combine(_root.Path, "qubes.xml"))
            .Replace("<domain id=\"domain-7\" class=\"DispVM\">", "<domain id=\"domain-7\" class=\"AppVM\">", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(_root.Path, "qubes.xml"), xml);
        var before = _root.Snapshot();

        // no -AllowFrom: refused, with the hint
        foreach (var script in new[] { "Add-QubePortForward -VMName work -Port 80", "Add-QubePortForward -VMName work -Port 80", "Add-QubePortForward -VMName work -Port 80 -Confirm:$false" })
        {
            var refused = Run(script);
            var error = Assert.Single(refused.Errors);
            Assert.Equal("AllowFromRequired,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand", error.FullyQualifiedErrorId);
            Assert.Contains("-AllowFrom Any to open it to everyone on purpose", error.ToString());
        }
        // -AllowFrom Any: asked as ConfirmImpact High (no host here: the question fails), -WhatIf neither asks nor refuses
        Assert.Contains(Run("Add-QubePortForward -VMName work -Port 80 -AllowFrom Any").Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal));
        Assert.Contains(Run("Add-QubePortForward -VMName work -Port 80 -AllowFrom Any").Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal));
        Run("Add-QubePortForward -VMName work -Port 80 -AllowFrom Any -WhatIf").AssertNoErrors();
        Assert.Equal("InvalidAllowFrom,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand",
            Assert.Single(Run("Add-QubePortForward -VMName work -Port 80 -AllowFrom Any, 10.0.0.0/8 -Confirm:$false").Errors).FullyQualifiedErrorId);
        _root.AssertUnchanged(before);

        Run("Add-QubePortForward -VMName work -Port 80 -AllowFrom Any -Confirm:$false").AssertNoErrors();
        Run("Add-QubePortForward -VMName work -Port 81 -AllowFrom 10.0.0.0/8").AssertNoErrors(); // with sources: no question
        var forwards = Run("Get-QubePortForward work").Of<QubePortForward>().OrderBy(f => f.Port).ToList();
        Assert.Equal([80, 81], forwards.Select(f => f.Port!.Value));
        Assert.Empty(forwards[0].AllowFrom);
        // re-applying the open forward as declared (the audit's fix) asks nothing
        Run("Get-QubePortForward -VMName work -Port 80 | Add-QubePortForward").AssertNoErrors();
    }

    [Fact]
    public void WhatIf_shows_a_plan_through_a_disposable_and_warns_of_nothing()
    {
        var before = _root.Snapshot();
        var run = Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24 -WhatIf");
        run.AssertNoErrors();
        Assert.Empty(run.Warnings);
        _root.AssertUnchanged(before);
        Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24").AssertNoErrors();
    }

    [Theory]
    [InlineData("Add-QubePortForward -VMName vault -Port 80", "NoNetVM")]
    [InlineData("Add-QubePortForward -VMName anon-whonix -Port 80", "WhonixInChain")]
    [InlineData("Add-QubePortForward -VMName nosuch -Port 80", "QubeNotFound")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -AllowFrom 192.168.1.5/24", "InvalidAllowFrom")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -AllowFrom 2001:db8::/32", "IPv6NotEnabled")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -Interface vif3.0", "InvalidInterface")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -Comment 'a=b'", "InvalidComment")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -Expire ([datetime]'2001-01-01')", "ExpireInPast")]
    [InlineData("Remove-QubePortForward -VMName work -Port 80 -Confirm:$false", "PortForwardNotFound")]
    public void Refusals_are_errors_with_specific_ids_and_change_nothing(string script, string errorId)
    {
        var before = _root.Snapshot();
        var run = Run(script);
        var error = Assert.Single(run.Errors);
        Assert.StartsWith(errorId + ",", error.FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
    }

    [Theory]
    [InlineData("Add-QubePortForward -VMName work -Port 0")]
    [InlineData("Add-QubePortForward -VMName work -Port 65536")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -Protocol Icmp")]
    [InlineData("Add-QubePortForward -VMName work -Port 80 -Type Sideways")]
    public void Out_of_range_values_are_refused_by_binding(string script)
    {
        var before = _root.Snapshot();
        var error = Assert.Single(Run(script).Errors);
        Assert.Matches("^(ParameterArgumentValidationError|CannotConvertArgumentNoMessage),", error.FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void A_port_given_as_text_with_leading_zeros_is_normalized()
    {
        Run("Add-QubePortForward -VMName work -Port '080' -AllowFrom 10.0.0.0/8").AssertNoErrors();
        var f = Assert.Single(Run("Get-QubePortForward").Of<QubePortForward>());
        Assert.Equal("qubesfirewall.forward.tcp.80", f.FeatureName);
    }

    [Fact]
    public void The_same_port_to_another_qube_through_a_shared_hop_is_refused()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8").AssertNoErrors();
        var run = Run("Add-QubePortForward personal 443 -AllowFrom 10.0.0.0/8");
        Assert.Equal(Fqid("PortAlreadyForwarded", "AddQubePortForward"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        Assert.Equal(ErrorCategory.ResourceExists, run.Errors[0].CategoryInfo.Category);
    }

    [Fact]
    public void Get_pipes_into_Remove_which_asks_by_default()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8; Add-QubePortForward work 22 -AllowFrom 10.0.0.0/8; Add-QubePortForward personal 51820 -Protocol Udp -AllowFrom 10.0.0.0/8").AssertNoErrors();
        var asked = Run("Get-QubePortForward work | Remove-QubePortForward");
        Assert.Contains(asked.Errors, e => e.FullyQualifiedErrorId.StartsWith("HostFunctionNotImplemented", StringComparison.Ordinal));
        Assert.Equal(3, Run("Get-QubePortForward").Of<QubePortForward>().Count());

        var run = Run("Get-QubePortForward work | Remove-QubePortForward -Confirm:$false -PassThru -Verbose");
        run.AssertNoErrors();
        // the two forwards of the pipeline are one change: one plan that names both
        Assert.DoesNotContain(run.Verbose, v => v.StartsWith("Remove port forward", StringComparison.Ordinal));
        var plan = Assert.Single(run.Verbose, v => v.StartsWith("Remove 2 port forwards, as one change:", StringComparison.Ordinal));
        Assert.Contains("    Remove port forward tcp/443 -> work:443 (sys-net -> sys-firewall -> work)", plan);
        Assert.Contains("    Remove port forward tcp/22 -> work:22 (sys-net -> sys-firewall -> work)", plan);
        var left = Assert.Single(Run("Get-QubePortForward").Of<QubePortForward>());
        Assert.Equal(("personal", ForwardProtocol.Udp), (left.VMName, left.Protocol!.Value));
        Assert.Equal("", Keys("work"));
        Assert.Contains(" proto=udp port=51820 ", Keys("sys-net"));
        Assert.DoesNotContain(" proto=tcp ", Keys("sys-net"));
    }

    [Fact]
    public void Forwards_pipe_back_into_Add_for_another_qube()
    {
        Run("Add-QubePortForward work 443 -TargetPort 8443 -AllowFrom 10.0.0.0/8 -Comment 'web'").AssertNoErrors();
        Run("Get-QubePortForward work | Add-QubePortForward -VMName untrusted -Port 9443").AssertNoErrors();
        var copy = Run("Get-QubePortForward untrusted").Of<QubePortForward>().Single();
        Assert.Equal((9443, 8443, "web"), (copy.Port!.Value, copy.TargetPort!.Value, copy.Comment));
        Assert.Equal(["10.0.0.0/8"], copy.AllowFrom);
    }

    [Fact]
    public void Get_filters_and_reports_unreadable_declarations()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8; Add-QubePortForward personal 53 -Protocol Udp -Type Internal -AllowFrom 10.137.0.11").AssertNoErrors();
        Assert.Equal(["work"], Run("Get-QubePortForward -Port 443").Of<QubePortForward>().Select(f => f.VMName));
        Assert.Equal(["personal"], Run("Get-QubePortForward -Protocol Udp").Of<QubePortForward>().Select(f => f.VMName));
        Assert.Equal(["personal", "work"], Run("'p*', 'work' | Get-QubePortForward").Of<QubePortForward>().Select(f => f.VMName));
        Assert.Equal(Fqid("QubeNotFound", "GetQubePortForward"), Assert.Single(Run("Get-QubePortForward nosuch").Errors).FullyQualifiedErrorId);

        var xml = Path.Combine(_root.Path, "qubes.xml");
        File.WriteAllText(xml, File.ReadAllText(xml).Replace("target=443 type=external allow=10.0.0.0/8", "target=99999 type=external allow=10.0.0.0/8", StringComparison.Ordinal));
        var run = Run("Get-QubePortForward");
        Assert.Equal(Fqid("InvalidPortForwardFeature", "GetQubePortForward"), Assert.Single(run.Errors).FullyQualifiedErrorId);
        Assert.Contains("Remove-QubePortForward -VMName work -Port 443", run.Errors[0].ToString());
        Assert.Equal(["personal"], run.Of<QubePortForward>().Select(f => f.VMName));
        Run("Remove-QubePortForward work 443 -Confirm:$false").AssertNoErrors();
        Assert.Empty(Run("Get-QubePortForward work").Errors);
    }

    [Fact]
    public void Export_returns_the_rules_of_each_qube()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8").AssertNoErrors();
        var run = Run("'sys-net', 'work' | Export-QubeFirewallScript");
        run.AssertNoErrors();
        var scripts = run.Of<string>().ToList();
        Assert.Equal(2, scripts.Count);
        Assert.Contains("ip saddr 10.0.0.0/8 tcp dport 443 dnat to 10.138.10.201", scripts[0]);
        Assert.Contains("tcp/443 to work", scripts[1]);
        Assert.Null(StateFile("sys-net", "/rw/config/qubes-firewall-user-script")); // shown, never written

        var none = Run("Export-QubeFirewallScript vault");
        none.AssertNoErrors();
        Assert.Empty(none.Output);
        Assert.Contains("No port forward crosses 'vault'", Assert.Single(none.Warnings));
    }

    [Fact]
    public void Remove_completes_the_declared_ports_of_the_qube()
    {
        Run("Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8; Add-QubePortForward work 22 -AllowFrom 10.0.0.0/8").AssertNoErrors();
        var run = Run("""
            $line = "Remove-QubePortForward -Root '$QubesRoot' -VMName work -Port "
            [System.Management.Automation.CommandCompletion]::CompleteInput($line, $line.Length, $null).CompletionMatches.CompletionText
            """);
        run.AssertNoErrors();
        Assert.Equal(["22", "443"], run.Output.Select(o => o.ToString()));
    }
}

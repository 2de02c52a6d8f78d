using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Set-QubeIPv6 and the IPv6 addresses the other cmdlets show, on both backends. Addresses by hand:
/// fd09:24ef:4179::a89:&lt;qid hex&gt; (work qid 11 → b, untrusted 12 → c, sys-net 5 → 5),
/// disposables ::a8a:&lt;dispid hex&gt; (sys-firewall dispid 2741 → ab5).
/// </summary>
public abstract class IPv6CmdletTests : IDisposable
{
    protected readonly SampleRootCopy _root = new();

    public virtual void Dispose() => _root.Dispose();

    protected abstract PsRun Run(string script);

    private string? IPv6Of(string qube) => Run($"(Get-Qube {qube}).IPv6").Output.SingleOrDefault()?.ToString();

    [Fact]
    public void Enabling_at_the_top_gives_the_chain_its_addresses()
    {
        Assert.Null(IPv6Of("work"));
        Run("Set-QubeIPv6 -VMName sys-net -Enabled $true").AssertNoErrors();
        var qubes = Run("Get-Qube").Of<Qube>().ToDictionary(q => q.Name);
        Assert.Equal("fd09:24ef:4179::a89:5", qubes["sys-net"].IPv6);
        Assert.Equal("fd09:24ef:4179::a8a:ab5", qubes["sys-firewall"].IPv6);
        Assert.Equal("fd09:24ef:4179::a89:b", qubes["work"].IPv6);
        Assert.Null(qubes["vault"].IPv6);
        Assert.Equal("1", qubes["sys-net"].Features["ipv6"]);
    }

    [Fact]
    public void Off_wins_over_the_chain_and_inherit_follows_it_again()
    {
        Run("Set-QubeIPv6 sys-net $true").AssertNoErrors();
        var off = Run("Set-QubeIPv6 -VMName untrusted -Enabled $false -PassThru");
        off.AssertNoErrors();
        var qube = Assert.Single(off.Of<Qube>());
        Assert.Null(qube.IPv6);
        Assert.Equal("", qube.Features["ipv6"]);
        var inherit = Run("Set-QubeIPv6 -VMName untrusted -Inherit -PassThru");
        inherit.AssertNoErrors();
        Assert.Equal("fd09:24ef:4179::a89:c", Assert.Single(inherit.Of<Qube>()).IPv6);
        Assert.False(Assert.Single(inherit.Of<Qube>()).Features.ContainsKey("ipv6"));
    }

    [Fact]
    public void Enabling_on_a_qube_without_network_is_refused()
    {
        var before = _root.Snapshot();
        var run = Run("Set-QubeIPv6 -VMName vault -Enabled $true");
        Assert.Equal("NoNetwork,QubesFirewall.PowerShell.Cmdlets.SetQubeIPv6Command", Assert.Single(run.Errors).FullyQualifiedErrorId);
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void Enabling_below_a_network_qube_without_IPv6_warns()
    {
        var run = Run("Set-QubeIPv6 -VMName work -Enabled $true");
        run.AssertNoErrors();
        Assert.Contains("Set-QubeIPv6 -VMName sys-net -Enabled $true", Assert.Single(run.Warnings));
        Assert.Equal("fd09:24ef:4179::a89:b", IPv6Of("work"));
    }

    [Fact]
    public void Piped_qubes_bind_by_name_one_ShouldProcess_each_and_WhatIf_changes_nothing()
    {
        var before = _root.Snapshot();
        Run("Get-Qube -NetVM sys-firewall | Set-QubeIPv6 -Enabled $true -WhatIf").AssertNoErrors();
        _root.AssertUnchanged(before);
        var run = Run("Get-Qube -NetVM sys-firewall | Set-QubeIPv6 -Enabled $true -Verbose -Confirm:$false -WarningAction SilentlyContinue");
        run.AssertNoErrors();
        var clients = Run("(Get-Qube -NetVM sys-firewall).Name").Output.Select(o => o.ToString()).ToList();
        // The uniform plan text, one ShouldProcess per qube.
        Assert.Equal(clients.Select(c => $"Set IPv6 of {c}:\n  1. {c}: Set feature ipv6 to '1' (IPv6 on): qvm-features {c} ipv6 '1'"),
            run.Verbose.Where(v => v.StartsWith("Set IPv6 of", StringComparison.Ordinal)));
        // Again: nothing left to change, no ShouldProcess.
        var again = Run("Get-Qube -NetVM sys-firewall | Set-QubeIPv6 -Enabled $true -Verbose -Confirm:$false -WarningAction SilentlyContinue");
        Assert.DoesNotContain(again.Verbose, v => v.StartsWith("Set IPv6 of", StringComparison.Ordinal));
    }

    [Fact]
    public void Sync_sends_the_rules_for_the_IPv6_address_too()
    {
        Run("Set-QubeIPv6 sys-net $true; Add-QubeFirewallRule -VMName work -Rule 'action=accept dst6=2001:db8::/32 proto=tcp dstports=443'").AssertNoErrors();
        var entries = Run("Sync-QubeFirewall work -PassThru").Of<QubesDbEntry>().Select(e => $"{e.Path}={e.Value}").ToList();
        // IPv4: seven rules as before plus the new one, but the dst6 rule (number 6) is skipped; IPv6: the dst6 rule and the rules without a host.
        Assert.Contains("/qubes-firewall/fd09:24ef:4179::a89:b/policy=drop", entries);
        Assert.Contains("/qubes-firewall/fd09:24ef:4179::a89:b/0006=action=accept dst6=2001:db8::/32 proto=tcp dstports=443-443", entries);
        Assert.DoesNotContain("/qubes-firewall/10.137.0.11/0006=action=accept dst6=2001:db8::/32 proto=tcp dstports=443-443", entries);
        Assert.DoesNotContain(entries, e => e.StartsWith("/qubes-firewall/fd09:24ef:4179::a89:b/0002=", StringComparison.Ordinal)); // dst4 10.1.2.0/24
        Assert.Contains("/qubes-firewall/fd09:24ef:4179::a89:b=", entries);
    }
}

public sealed class OfflineIPv6CmdletTests : IPv6CmdletTests
{
    protected override PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);
}

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveIPv6CmdletTests : IPv6CmdletTests
{
    private readonly LiveServer _live;
    private FakeQubesd Server => _live.Server;

    public LiveIPv6CmdletTests()
    {
        _live = new LiveServer(_root.Path);
    }

    public override void Dispose()
    {
        _live.Dispose();
        base.Dispose();
    }

    protected override PsRun Run(string script) => _live.Run(script);

    [Fact]
    public void The_feature_calls()
    {
        Server.ClearCalls();
        Run("Set-QubeIPv6 work $true -WarningAction SilentlyContinue; Set-QubeIPv6 work $false; Set-QubeIPv6 work -Inherit").AssertNoErrors();
        Assert.Equal(
        [
            "admin.vm.feature.Set+ipv6 dom0 name work\01",
            "admin.vm.feature.Set+ipv6 dom0 name work\0",
            "admin.vm.feature.Remove+ipv6 dom0 name work\0",
        ], Server.Calls.Where(c => c.Method is "admin.vm.feature.Set" or "admin.vm.feature.Remove").Select(c => System.Text.Encoding.ASCII.GetString(c.Raw)));
    }
}

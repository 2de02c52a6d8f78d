using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The small ones of issue 16: white space is not "absent", expiry values out of range are a clear error, and host
/// names are accepted as qubesd accepts them.
/// </summary>
public sealed class SmallTrustCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    [Theory]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -DstHost ' ' -Position 0")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -DstHost \"`t\" -Position 0")]
    [InlineData("Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstPorts '  ' -Position 0")]
    [InlineData("Add-QubePortForward -VMName work -Port 443 -AllowFrom ' '")]
    [InlineData("Add-QubePortForward -VMName work -Port 443 -AllowFrom '192.168.1.0/24',' '")]
    public void A_value_of_only_white_space_is_refused_never_taken_as_absent(string command)
    {
        var before = _root.Snapshot();
        var run = Run(command);
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("ParameterArgumentTransformationError", error.FullyQualifiedErrorId);
        Assert.Contains("only white space", error.ToString());
        _root.AssertUnchanged(before);
    }

    [Fact]
    public void An_empty_string_still_means_not_given()
    {
        var run = Run("Add-QubeFirewallRule -VMName work -Action Drop -DstHost '' -Protocol Tcp -DstPorts 25 -Position 0 -PassThru");
        run.AssertNoErrors();
        Assert.Contains(run.Output, o => o.ToString()!.Contains("action=drop proto=tcp dstports=25-25", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("([timespan]::MaxValue)")]
    [InlineData("([timespan]::FromDays(3000000))")]
    [InlineData("'+999999999999'")]
    [InlineData("999999999999")]
    public void An_expiry_out_of_range_is_a_clear_error(string expire)
    {
        foreach (var command in new[]
        {
            $"Add-QubeFirewallRule -VMName work -Action Accept -DstHost 192.0.2.1 -Position 0 -Expire {expire}",
            $"Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.0.2.1 -Expire {expire}",
        })
        {
            var run = Run(command);
            var error = Assert.Single(run.Errors);
            Assert.StartsWith("InvalidExpire,", error.FullyQualifiedErrorId);
            Assert.Contains("before the year 10000", error.ToString());
        }
    }

    [Theory]
    [InlineData("a_b.example")]
    [InlineData("_srv.example.org")]
    [InlineData("host-1.internal")]
    public void Host_names_are_accepted_as_qubesd_accepts_them(string name)
    {
        // core-admin qubes/firewall.py DstHost: string.ascii_lowercase + string.digits + "-._"
        var rule = RuleText.Parse($"action=accept dsthost={name} proto=tcp dstports=443", DateTimeOffset.UnixEpoch);
        Assert.Equal(HostKind.Name, rule.DstHost!.Kind);
        var run = Run($"Add-QubeFirewallRule -VMName work -Action Accept -DstHost {name} -Protocol Tcp -DstPorts 443 -Position 0 -PassThru");
        run.AssertNoErrors();
        Assert.Contains($"dsthost={name}", File.ReadAllText(_root.FirewallXml("work")).Replace("<property name=\"dsthost\">", "dsthost=", StringComparison.Ordinal));
    }
}

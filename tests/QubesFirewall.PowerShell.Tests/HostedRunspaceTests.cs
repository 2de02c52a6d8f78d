using System.Text.Json;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The hosted runspace is pwsh's own (Microsoft.PowerShell.SDK): the built-in modules are there, so
/// the pipelines the README shows (Import-Csv into Add-QubeFirewallRule, JSON round trips,
/// Measure-Object) run in the cmdlet tests exactly as a user types them, and it is the same
/// PowerShell release as the pinned pwsh tool that runs the Pester suite.
/// </summary>
public sealed class HostedRunspaceTests : IDisposable
{
    private readonly SampleRootCopy _root = new();
    private readonly string _csv = Path.Combine(Path.GetTempPath(), "qfw-rules-" + Guid.NewGuid().ToString("N")[..12] + ".csv");

    public void Dispose()
    {
        _root.Dispose();
        File.Delete(_csv);
    }

    [Fact]
    public void Utility_cmdlets_come_from_the_built_in_module()
    {
        var run = PowerShellHost.Run("(Get-Command Import-Csv, ConvertFrom-Json, ConvertTo-Json, Measure-Object, Select-Object).Source");
        run.AssertNoErrors();
        Assert.Equal(Enumerable.Repeat("Microsoft.PowerShell.Utility", 5), run.Output.Select(o => o.ToString()));
    }

    [Fact]
    public void A_spreadsheet_of_rules_goes_through_Import_Csv_JSON_and_Measure_Object()
    {
        File.WriteAllLines(_csv,
        [
            "VMName,Action,Protocol,DstHost,DstPorts,Comment",
            "work,Accept,Tcp,a.example,443,from the sheet",
            "work,Accept,Udp,b.example,53,from the sheet",
            "work,Drop,Tcp,192.0.2.0/24,22,from the sheet",
        ]);
        var run = PowerShellHost.Run("""
            Import-Csv -Path $Csv | Add-QubeFirewallRule
            $json = Get-QubeFirewallRule -VMName work | Select-Object -Property VMName, Number, DstHost, Comment | ConvertTo-Json
            $json | ConvertFrom-Json | Where-Object Comment -EQ 'from the sheet' | Measure-Object -Property Number -Minimum -Maximum
            """, _root.Path, new Dictionary<string, object?> { ["Csv"] = _csv });
        run.AssertNoErrors();
        var measure = Assert.IsType<Microsoft.PowerShell.Commands.GenericMeasureInfo>(Assert.Single(run.Output).BaseObject);
        Assert.Equal(3, measure.Count);

        // The rules landed before the catch-all, in the sheet's order, numbered consecutively.
        var rules = PowerShellHost.Run("Get-QubeFirewallRule -VMName work", _root.Path).Of<QubeFirewallRule>().ToList();
        var fromSheet = rules.Where(r => r.Comment == "from the sheet").ToList();
        Assert.Equal(["a.example", "b.example", "192.0.2.0/24"], fromSheet.Select(r => r.DstHost));
        Assert.Equal(fromSheet[0].Number, (int)measure.Minimum!.Value);
        Assert.Equal(fromSheet[0].Number + 2, (int)measure.Maximum!.Value);
        Assert.True(rules[^1].IsCatchAll);
    }

    [Fact]
    public void The_hosted_runspace_is_the_release_of_the_pinned_pwsh_tool()
    {
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(Repo.Root, "dotnet-tools.json")));
        var pinned = manifest.RootElement.GetProperty("tools").GetProperty("powershell").GetProperty("version").GetString();
        var run = PowerShellHost.Run("$PSVersionTable.PSVersion.ToString()");
        run.AssertNoErrors();
        Assert.Equal(pinned, Assert.Single(run.Output).ToString());
    }
}

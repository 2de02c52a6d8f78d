using System.Globalization;
using CsCheck;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Tests.Fuzz;
using QubesFirewall.Engine.Validation;
using Xunit.Abstractions;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// Every cmdlet parameter whose value reaches a file, a script or qubesd, fed invalid values (injection
/// payloads, control and non-ASCII characters, grammar edge cases) through the staged module on a copy
/// of the sample root: each call ends in a clear error (an ErrorRecord whose id is the module's or
/// PowerShell's parameter validation, never an unhandled exception) and nothing is written (every file
/// of the root byte for byte the same). The engine's own validators are the oracle that the values are
/// invalid; a control run of each command with a valid value proves the command line is otherwise right.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ParameterFuzzTests(ITestOutputHelper output) : IDisposable
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UtcNow;
    private readonly SampleRootCopy _root = new();
    private readonly SampleRootCopy _controlRoot = new();

    public void Dispose()
    {
        _root.Dispose();
        _controlRoot.Dispose();
    }

    /// <summary>One command line with a slot ($v) for the fuzzed value.</summary>
    /// <param name="Wildcards">A read-only listing that takes wildcards: a pattern matching nothing may end silently, with no output.</param>
    private sealed record Template(string Command, string Parameter, string Script, string Valid, Func<string, bool> IsInvalid, bool Wildcards = false);

    private static bool Throws(Action a)
    {
        try
        {
            a();
            return false;
        }
        catch (QubesFirewallException)
        {
            return true;
        }
    }

    private static bool InvalidName(string v) => !QubeName.IsValid(v);

    private static readonly Template[] Templates =
    [
        new("Add-QubeFirewallRule", "VMName", "Add-QubeFirewallRule -VMName $v -Rule 'action=drop dst4=192.0.2.1'", "work", InvalidName),
        new("Add-QubeFirewallRule", "Rule", "Add-QubeFirewallRule -VMName work -Rule $v", "action=accept dst4=192.0.2.7 comment=fuzz control",
            v => !string.IsNullOrWhiteSpace(v) && !v.Trim().StartsWith('#') && !RuleText.TryParse(v.Trim(), out _, out _)),
        new("Add-QubeFirewallRule", "DstHost", "Add-QubeFirewallRule -VMName work -Action Accept -DstHost $v", "192.0.2.8",
            v => !string.IsNullOrWhiteSpace(v) && !HostSpec.TryParse(v, out _, out _)),
        new("Add-QubeFirewallRule", "DstPorts", "Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstPorts $v", "8443",
            v => !string.IsNullOrWhiteSpace(v) && !PortRange.TryParse(v, out _, out _)),
        new("Add-QubeFirewallRule", "Comment", "Add-QubeFirewallRule -VMName work -Action Accept -DstHost 192.0.2.9 -Comment $v", "fuzz control",
            v => !string.IsNullOrWhiteSpace(v) && v.Any(c => !RuleGrammar.IsCommentChar(c))),
        new("Add-QubeFirewallRule", "Expire", "Add-QubeFirewallRule -VMName work -Action Accept -DstHost 192.0.2.10 -Expire $v", "+3600",
            v => !string.IsNullOrWhiteSpace(v) && Throws(() => ExpireArgument.ToUnixTime(v, Now))),
        new("Remove-QubeFirewallRule", "VMName", "Remove-QubeFirewallRule -VMName $v -Number 0 -Confirm:$false", "work", InvalidName),
        new("Sync-QubeFirewall", "VMName", "Sync-QubeFirewall -VMName $v", "work", InvalidName),
        new("Get-QubeFirewallRule", "VMName", "Get-QubeFirewallRule -VMName $v", "work", InvalidName, Wildcards: true),
        new("Add-QubePortForward", "VMName", "Add-QubePortForward -VMName $v -Port 8080 -AllowFrom 192.168.1.0/24 -Confirm:$false", "work", InvalidName),
        new("Add-QubePortForward", "AllowFrom", "Add-QubePortForward -VMName work -Port 8081 -AllowFrom $v -Confirm:$false", "192.168.1.0/24",
            v => !string.IsNullOrWhiteSpace(v) && (Throws(() => PortForward.ParseAllowFrom([v])) || v.Contains(':'))),
        new("Add-QubePortForward", "Interface", "Add-QubePortForward -VMName work -Port 8082 -AllowFrom 192.168.1.0/24 -Interface $v -Confirm:$false", "ens6",
            v => !string.IsNullOrWhiteSpace(v) && Throws(() => PortForward.ValidateInterface(v))),
        new("Add-QubePortForward", "Comment", "Add-QubePortForward -VMName work -Port 8083 -AllowFrom 192.168.1.0/24 -Comment $v -Confirm:$false", "fuzz control",
            v => !string.IsNullOrWhiteSpace(v) && Throws(() => PortForward.ValidateComment(v))),
        new("Add-QubePortForward", "Expire", "Add-QubePortForward -VMName work -Port 8084 -AllowFrom 192.168.1.0/24 -Expire $v -Confirm:$false", "+3600",
            v => !string.IsNullOrWhiteSpace(v) && Throws(() => ExpireArgument.ToUnixTime(v, Now))),
        new("Add-QubePortForward", "Port", "Add-QubePortForward -VMName work -Port $v -AllowFrom 192.168.1.0/24 -Confirm:$false", "8085",
            v => !System.Management.Automation.LanguagePrimitives.TryConvertTo<int>(v, CultureInfo.InvariantCulture, out var p) || p is < 1 or > 65535),
        new("Remove-QubePortForward", "VMName", "Remove-QubePortForward -VMName $v -Port 8080 -Confirm:$false", "work", InvalidName),
        new("Export-QubeFirewallScript", "VMName", "Export-QubeFirewallScript -VMName $v", "work", InvalidName),
        new("Add-QubeTcpBinding", "From", "Add-QubeTcpBinding -From $v -To personal -Port 22 -Confirm:$false", "work", InvalidName),
        new("Add-QubeTcpBinding", "To", "Add-QubeTcpBinding -From work -To $v -Port 23 -Confirm:$false", "personal", InvalidName),
        new("Remove-QubeTcpBinding", "From", "Remove-QubeTcpBinding -From $v -To personal -Port 22 -Confirm:$false", "work", InvalidName),
        new("Repair-QubeNetVm", "NetVM", "Repair-QubeNetVm -NetVM $v -Confirm:$false", "sys-firewall", InvalidName),
        new("Set-QubeIPv6", "VMName", "Set-QubeIPv6 -VMName $v -Enabled $true -Confirm:$false", "sys-net", InvalidName),
        new("Test-QubeFirewall", "VMName", "Test-QubeFirewall -VMName $v", "work", InvalidName, Wildcards: true),
        new("Get-Qube", "Name", "Get-Qube -Name $v", "work", InvalidName, Wildcards: true),
        new("Get-QubePortForward", "VMName", "Get-QubePortForward -VMName $v", "work", InvalidName, Wildcards: true),
        new("Get-QubeTcpBinding", "From", "Get-QubeTcpBinding -From $v", "work", InvalidName, Wildcards: true),
        new("Get-QubeTcpBinding", "To", "Get-QubeTcpBinding -To $v", "personal", InvalidName, Wildcards: true),
        new("Remove-QubeTcpBinding", "To", "Remove-QubeTcpBinding -From work -To $v -Port 23 -Confirm:$false", "personal", InvalidName),
        new("Enable-QubeInterVmNetwork", "From", "Enable-QubeInterVmNetwork -From $v -To personal -Port 5432 -Confirm:$false", "work", InvalidName),
        new("Enable-QubeInterVmNetwork", "To", "Enable-QubeInterVmNetwork -From work -To $v -Port 5433 -Confirm:$false", "personal", InvalidName),
        new("Get-QubeInterVmNetwork", "From", "Get-QubeInterVmNetwork -From $v", "work", InvalidName, Wildcards: true),
        new("Get-QubeInterVmNetwork", "To", "Get-QubeInterVmNetwork -To $v", "personal", InvalidName, Wildcards: true),
        new("Disable-QubeInterVmNetwork", "From", "Disable-QubeInterVmNetwork -From $v -To personal -Port 5432 -Confirm:$false", "work", InvalidName),
        new("Disable-QubeInterVmNetwork", "To", "Disable-QubeInterVmNetwork -From work -To $v -Port 5433 -Confirm:$false", "personal", InvalidName),
    ];

    /// <summary>Grammar edge cases that look almost right.</summary>
    private static readonly string[] EdgeCases =
    [
        "", " ", "\t", "work ", " work", "Work\n", "wo rk", "work\0", "work;", "work/..", "../work", "none", "default", "Domain-0", "x-dm", "1work", "-work", ".work",
        new string('a', 32), "w\u00f6rk", "\u0445ork", "work\u200b", "lo", "vif3.0", "vif", "eth0\n", "eth 0", "eth0\"", new string('e', 16),
        "192.168.1.1/24", "192.168.1.0/33", "192.168.001.0/24", "fd00::/64", "example.com", "10.0.0.0/8,", ",", "0", "65536", "80-", "-80", "80-70", "0x50",
        "1e3", "80 ", "tomorrow", "+", "+-1", "-1", "99999999999999", "1970-01-01", "comment=x", "action=forward", "action=accept\naction=drop",
        "action=accept dst4=1.2.3.4/32 dst4=5.6.7.8", "action=accept comment=a=b", "action=accept proto=tcp dstports=65536",
    ];

    private sealed record Case(int Template, string Value);

    private const string Runner = """
        $results = [System.Collections.Generic.List[object]]::new()
        $commands = @{}
        foreach ($template in $templates) { $name = ($template -split ' ')[0]; $commands[$name] = [bool](Get-Command $name -ErrorAction Ignore) }
        for ($i = 0; $i -lt $cases.Count; $i++) {
            $template = $templates[$cases[$i].Template]
            if (-not $commands[($template -split ' ')[0]]) { $results.Add([pscustomobject]@{ Index = $i; Missing = $true; Ids = @(); Messages = @() }); continue }
            $block = [scriptblock]::Create("param(`$v) $template")
            $errs = [System.Collections.Generic.List[object]]::new()
            $outputs = 0
            try {
                & $block $cases[$i].Value 2>&1 | ForEach-Object { if ($_ -is [System.Management.Automation.ErrorRecord]) { $errs.Add($_) } else { $outputs++ } }
            } catch {
                $errs.Add($_)
            }
            $results.Add([pscustomobject]@{ Index = $i; Missing = $false; Outputs = $outputs; Ids = @($errs | ForEach-Object { $_.FullyQualifiedErrorId }); Messages = @($errs | ForEach-Object { "$_" }) })
        }
        $results
        """;

    /// <summary>Error ids that say the command line itself was wrong: a template bug, not a refusal of the value.</summary>
    private static readonly string[] TemplateBugs = ["NamedParameterNotFound", "MissingMandatoryParameter", "AmbiguousParameterSet", "CommandNotFoundException", "PositionalParameterNotFound"];

    [Fact]
    public void Invalid_values_of_every_parameter_that_reaches_a_script_or_qubesd_are_refused_clearly_and_nothing_is_written()
    {
        // Values: payloads around a valid value, random strings, edge cases; kept only when the engine's validator refuses them.
        var perTemplate = Fuzz.Iterations(40);
        var cases = new List<Case>();
        var tried = 0;
        for (var t = 0; t < Templates.Length; t++)
        {
            var template = Templates[t];
            var candidates = Gen.OneOf(
                from payload in Gens.Payload
                from at in Gen.Int[0, 100]
                let pos = at % (template.Valid.Length + 1)
                select template.Valid.Insert(pos, payload),
                Gens.Payload,
                Gens.AnyString);
            var values = new List<string>(EdgeCases);
            Fuzz.Check($"cmdlet parameter {template.Command} -{template.Parameter}: candidates", candidates, perTemplate * 2, values.Add);
            foreach (var v in values.Distinct(StringComparer.Ordinal))
            {
                tried++;
                if (template.IsInvalid(v) && cases.Count(c => c.Template == t) < perTemplate + EdgeCases.Length) cases.Add(new Case(t, v));
            }
        }

        var before = _root.Snapshot();
        var run = PowerShellHost.Run(Runner, _root.Path, new Dictionary<string, object?>
        {
            ["templates"] = Templates.Select(t => t.Script).ToArray(),
            ["cases"] = cases.ToArray(),
        }, new Dictionary<string, string> { ["QUBESFW_QUBESD_SOCKET"] = "" });
        run.AssertNoErrors();
        _root.AssertUnchanged(before);

        var results = run.Output.Select(o => o.Properties).ToList();
        Assert.Equal(cases.Count, results.Count);
        var refusedBy = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var executed = 0;
        var silent = 0;
        for (var i = 0; i < cases.Count; i++)
        {
            var template = Templates[cases[i].Template];
            if ((bool)results[i]["Missing"].Value)
            {
                Assert.Fail($"{template.Command} is not in the module");
            }
            executed++;
            CheckRefusal(template, cases[i].Value, results[i], ref silent, refusedBy);
        }

        // Controls: each command line with a valid value works (on another copy), so the refusals above are the values'.
        var controls = Templates.Select((t, i) => new Case(i, t.Valid)).ToArray();
        var control = PowerShellHost.Run(Runner, _controlRoot.Path, new Dictionary<string, object?>
        {
            ["templates"] = Templates.Select(t => t.Script).ToArray(),
            ["cases"] = controls,
        }, new Dictionary<string, string> { ["QUBESFW_QUBESD_SOCKET"] = "" });
        control.AssertNoErrors();
        foreach (var result in control.Output.Select(o => o.Properties))
        {
            var template = Templates[controls[(int)result["Index"].Value].Template];
            if ((bool)result["Missing"].Value) continue;
            var ids = ((object[])result["Ids"].Value).Select(o => o.ToString()!).ToList();
            if (ids.Count == 0) continue;
            var detail = $"{template.Command} -{template.Parameter} {template.Valid}: {string.Join(" | ", ((object[])result["Messages"].Value).Select(o => o.ToString()))}";
            Assert.Fail($"the control run failed, so the template is wrong: {detail}");
        }

        output.WriteLine($"{tried} candidate values tried, {cases.Count} invalid ones run through {Templates.Length} parameters ({executed} executions); every one refused ({silent} wildcard patterns of read-only listings matched nothing), no file changed");
        output.WriteLine("refused with: " + string.Join(", ", refusedBy.Select(kv => $"{kv.Key} {kv.Value}")));
    }

    private static void CheckRefusal(Template template, string value, System.Management.Automation.PSMemberInfoCollection<System.Management.Automation.PSPropertyInfo> result,
        ref int silent, SortedDictionary<string, int> refusedBy)
    {
        var ids = ((object[])result["Ids"].Value).Select(o => o.ToString()!).ToList();
        var messages = ((object[])result["Messages"].Value).Select(o => o.ToString()!).ToList();
        var what = $"{template.Command} -{template.Parameter} {Fuzz.Show(value)}";
        if (ids.Count == 0 && template.Wildcards && System.Management.Automation.WildcardPattern.ContainsWildcardCharacters(value))
        {
            Assert.True((int)result["Outputs"].Value == 0, $"{what} listed something");
            silent++;
            return;
        }
        Assert.True(ids.Count > 0, $"{what} was accepted");
        foreach (var id in ids)
        {
            var head = id.Split(',')[0];
            Assert.DoesNotContain(head, TemplateBugs);
            // A clear error: the module's PascalCase id or PowerShell's binding/validation, never a crash.
            Assert.False(head.EndsWith("Exception", StringComparison.Ordinal) && !head.StartsWith("ParameterBinding", StringComparison.Ordinal) || head.Contains('.'),
                $"{what}: unhandled error {id}: {string.Join(" | ", messages)}");
            lock (refusedBy) refusedBy[head] = refusedBy.GetValueOrDefault(head) + 1;
        }
        Assert.All(messages, m => Assert.False(string.IsNullOrWhiteSpace(m), $"{what}: empty message"));
    }
}

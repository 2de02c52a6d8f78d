using System.Collections;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell;

/// <summary>Completes qube names from the backend the command would use (its -Root, else the environment).</summary>
public sealed class QubeNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var prefix = wordToComplete.Trim('\'', '"');
        // Live: one admin.vm.List, not the whole inventory (one GetAll per qube) at each Tab.
        var names = CompletionSource.Read(fakeBoundParameters, backend => backend.ListQubeNames());
        return names
            .Where(n => n.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal)
            .Select(n => new CompletionResult(n, n, CompletionResultType.ParameterValue, n));
    }
}

/// <summary>Completes a -NetVM parameter with the qubes that can be one: they provide network, and are neither templates nor dom0.</summary>
public sealed class NetworkQubeCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var prefix = wordToComplete.Trim('\'', '"');
        var names = CompletionSource.Read(fakeBoundParameters, backend => backend.GetInventory().Qubes
            .Where(q => q.ProvidesNetwork && q.Class is not (QubeClass.TemplateVM or QubeClass.AdminVM or QubeClass.RemoteVM))
            .Select(q => q.Name));
        return names.Where(n => n.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal)
            .Select(n => new CompletionResult(n, n, CompletionResultType.ParameterValue, n));
    }
}

/// <summary>Completes Remove-QubeFirewallRule's -Number with the numbers of the rules of the qube given as -VMName, each with its text.</summary>
public sealed class RuleNumberCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        if (fakeBoundParameters["VMName"] is not string vm) return [];
        var rules = CompletionSource.Read(fakeBoundParameters, backend => QubeFirewallRule.Visible(vm, backend.GetFirewall(vm).Rules, DateTimeOffset.UtcNow));
        return rules
            .Select(r => (Text: r.Number.ToString(CultureInfo.InvariantCulture), Rule: r))
            .Where(x => x.Text.StartsWith(wordToComplete, StringComparison.Ordinal))
            .Select(x => new CompletionResult(x.Text, $"{x.Text}: {x.Rule.Text}", CompletionResultType.ParameterValue, x.Rule.Text));
    }
}

/// <summary>Completes -Port with the ports declared on the qube given as -VMName (and the protocol, when given).</summary>
public sealed class PortForwardPortCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var vm = fakeBoundParameters["VMName"] as string;
        var protocol = fakeBoundParameters["Protocol"]?.ToString();
        var declarations = CompletionSource.Read(fakeBoundParameters,
            backend => PortForwardDeclaration.ReadAll(backend.GetInventory()).Where(d => d.Forward is not null && (vm is null || d.VMName == vm)));
        return declarations
            .Where(d => protocol is null || d.Forward!.Protocol.ToString().Equals(protocol, StringComparison.OrdinalIgnoreCase))
            .Select(d => d.Forward!)
            .Where(f => f.Port.ToString(CultureInfo.InvariantCulture).StartsWith(wordToComplete, StringComparison.Ordinal))
            .OrderBy(f => f.Port)
            .Select(f => new CompletionResult(f.Port.ToString(CultureInfo.InvariantCulture), f.Port.ToString(CultureInfo.InvariantCulture), CompletionResultType.ParameterValue, $"{f.Text} ({f.Type})"))
            .DistinctBy(c => c.CompletionText);
    }
}

/// <summary>
/// Completes -To and -Port of Remove-QubeTcpBinding from the bindings declared on the qube given as -From
/// (and, for -Port, the -To given).
/// </summary>
public sealed class TcpBindingCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var from = fakeBoundParameters["From"] as string;
        var to = fakeBoundParameters["To"] as string;
        var bindings = CompletionSource.Read(fakeBoundParameters, backend =>
        {
            var inventory = backend.GetInventory();
            IReadOnlyList<Qube> qubes = from is null ? inventory.Qubes : inventory.Find(from) is { } q ? [q] : [];
            return qubes.SelectMany(TcpBindingDeclaration.Read).Where(d => d.Binding is not null).Select(d => d.Binding!);
        });
        var prefix = wordToComplete.Trim('\'', '"');
        if (string.Equals(parameterName, "Port", StringComparison.OrdinalIgnoreCase))
            return bindings
                .Where(b => to is null || b.To == to)
                .Where(b => b.Port.ToString(CultureInfo.InvariantCulture).StartsWith(prefix, StringComparison.Ordinal))
                .OrderBy(b => b.Port)
                .Select(b => new CompletionResult(b.Port.ToString(CultureInfo.InvariantCulture), b.Port.ToString(CultureInfo.InvariantCulture), CompletionResultType.ParameterValue, b.Text))
                .DistinctBy(c => c.CompletionText)
                .ToList();
        return bindings
            .Where(b => b.To.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            .OrderBy(b => b.To, StringComparer.Ordinal)
            .Select(b => new CompletionResult(b.To, b.To, CompletionResultType.ParameterValue, b.Text))
            .DistinctBy(c => c.CompletionText)
            .ToList();
    }
}

/// <summary>
/// What every completer reads with: the backend the command would use (its -Root, else the environment), opened for
/// one read; nothing when that fails, as completion never throws at the user.
/// </summary>
internal static class CompletionSource
{
    public static List<T> Read<T>(IDictionary fakeBoundParameters, Func<IQubesBackend, IEnumerable<T>> read)
    {
        try
        {
            using var backend = BackendSelector.Open(fakeBoundParameters["Root"] as string);
            return read(backend).ToList();
        }
        catch (Exception)
        {
            return [];
        }
    }
}

using System.Text;

namespace QubesFirewall.Engine.Scripts;

/// <summary>
/// The shell around one idempotent nft transaction over chains the module owns in <c>table ip qubes</c> /
/// <c>ip6 qubes</c> (port forwards, inter-qube links): read each table once with handles, delete the earlier
/// jumps carrying <paramref name="marker"/> as their exact comment in <c>custom-forward</c> and
/// <c>custom-input</c>, then pipe those deletions and the transaction into one <c>nft -f -</c>, so either
/// all of it applies or nothing does. Each writer has its own marker, so one never deletes another's jumps.
/// </summary>
public static class NftOwnedChains
{
    /// <summary>Appends the subshell that runs <paramref name="transaction"/>; <paramref name="what"/> names the rules in messages ("port forward").</summary>
    public static void AppendRun(StringBuilder sb, string qubeName, IReadOnlyList<NftFamily> families, string marker, string transaction, string what)
    {
        sb.Append("(\n");
        foreach (var family in families)
        {
            sb.Append("  ").Append(Variable(family)).Append("=$(nft -a list table ").Append(NftForwardScript.Table(family)).Append(") || { echo ")
              .Append(ShellQuote.Single($"qubesfirewall: cannot read table {NftForwardScript.Table(family)} in {qubeName}; {what}s not changed")).Append(" >&2; exit 1; }\n");
        }
        sb.Append("  {\n");
        foreach (var family in families)
        {
            sb.Append("    printf '%s\\n' \"$").Append(Variable(family)).Append("\" | awk -v t=").Append(ShellQuote.Single(NftForwardScript.Table(family)))
              .Append(" '$1 == \"chain\" { c = $2 } $1 == \"}\" { c = \"\" } (c == \"custom-forward\" || c == \"custom-input\") && / comment \"")
              .Append(marker).Append("\" # handle [0-9]+$/ { print \"delete rule \" t \" \" c \" handle \" $NF }'\n");
        }
        sb.Append("    cat <<'").Append(NftForwardScript.HeredocDelimiter).Append("'\n");
        sb.Append(transaction);
        sb.Append(NftForwardScript.HeredocDelimiter).Append('\n');
        sb.Append("  } | nft -f - || { echo ")
          .Append(ShellQuote.Single($"qubesfirewall: nft refused the {what} rules of {qubeName}; the previous rules are unchanged")).Append(" >&2; exit 1; }\n");
        sb.Append(")\n");
    }

    /// <summary>
    /// Appends the transaction over <paramref name="chains"/> of one table: declare them (a base chain with its hook),
    /// flush them, fill them, jump to each one that has rules from its <see cref="OwnedChain.JumpFrom"/> chain (the jump
    /// commented <paramref name="marker"/>), delete each one left empty.
    /// </summary>
    public static void AppendTransaction(StringBuilder sb, string table, string marker, IReadOnlyList<OwnedChain> chains)
    {
        sb.Append("table ").Append(table).Append(" {\n");
        foreach (var c in chains)
        {
            sb.Append("\tchain ").Append(c.Name).Append(" {\n");
            if (c.Hook is not null) sb.Append("\t\t").Append(c.Hook).Append('\n');
            sb.Append("\t}\n");
        }
        sb.Append("}\n");
        foreach (var c in chains) sb.Append("flush chain ").Append(table).Append(' ').Append(c.Name).Append('\n');
        foreach (var c in chains)
            foreach (var rule in c.Rules) sb.Append("add rule ").Append(table).Append(' ').Append(c.Name).Append(' ').Append(rule).Append('\n');
        foreach (var c in chains.Where(c => c.JumpFrom is not null && c.Rules.Count > 0))
            sb.Append("insert rule ").Append(table).Append(' ').Append(c.JumpFrom).Append(" jump ").Append(c.Name).Append(" comment \"").Append(marker).Append("\"\n");
        foreach (var c in chains.Where(c => c.Rules.Count == 0)) sb.Append("delete chain ").Append(table).Append(' ').Append(c.Name).Append('\n');
    }

    private static string Variable(NftFamily family) => family == NftFamily.Ip ? "qubesfw_ip" : "qubesfw_ip6";
}

/// <summary>A chain the module owns: its rules, the user chain that jumps to it (null: none), the hook line of a base chain (null: a regular chain).</summary>
public sealed record OwnedChain(string Name, IReadOnlyList<string> Rules, string? JumpFrom = null, string? Hook = null);

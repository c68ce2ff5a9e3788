package dev.cardbus.isohost;

import org.jpos.iso.IFA_LLLBINARY;
import org.jpos.iso.IFA_LLLCHAR;
import org.jpos.iso.IFA_LLNUM;
import org.jpos.iso.IFA_NUMERIC;
import org.jpos.iso.IFB_BINARY;
import org.jpos.iso.IFB_BITMAP;
import org.jpos.iso.IF_CHAR;
import org.jpos.iso.ISOBasePackager;
import org.jpos.iso.ISOFieldPackager;

/**
 * The host's field definitions: ISO 8583:1987 with ASCII numerics and lengths, a binary bitmap
 * (primary + secondary), a binary PIN block (DE 52) and binary ICC data with an ASCII LLL length
 * (DE 55). Only the fields the bank host uses are declared: a message with any other field does
 * not unpack. Built from jPOS's own field packagers; it shares nothing with the Python bridge.
 */
public final class CardBus87Packager extends ISOBasePackager {
    private static ISOFieldPackager[] fields() {
        ISOFieldPackager[] f = new ISOFieldPackager[129];
        f[0] = new IFA_NUMERIC(4, "MESSAGE TYPE INDICATOR");
        f[1] = new IFB_BITMAP(16, "BIT MAP");
        f[2] = new IFA_LLNUM(19, "PAN - PRIMARY ACCOUNT NUMBER");
        f[3] = new IFA_NUMERIC(6, "PROCESSING CODE");
        f[4] = new IFA_NUMERIC(12, "AMOUNT, TRANSACTION");
        f[7] = new IFA_NUMERIC(10, "TRANSMISSION DATE AND TIME");
        f[11] = new IFA_NUMERIC(6, "SYSTEM TRACE AUDIT NUMBER");
        f[12] = new IFA_NUMERIC(6, "TIME, LOCAL TRANSACTION");
        f[13] = new IFA_NUMERIC(4, "DATE, LOCAL TRANSACTION");
        f[22] = new IFA_NUMERIC(3, "POINT OF SERVICE ENTRY MODE");
        f[38] = new IF_CHAR(6, "AUTHORIZATION IDENTIFICATION RESPONSE");
        f[39] = new IF_CHAR(2, "RESPONSE CODE");
        f[41] = new IF_CHAR(8, "CARD ACCEPTOR TERMINAL IDENTIFICACION");
        f[42] = new IF_CHAR(15, "CARD ACCEPTOR IDENTIFICATION CODE");
        f[49] = new IF_CHAR(3, "CURRENCY CODE, TRANSACTION");
        f[52] = new IFB_BINARY(8, "PIN DATA");
        f[54] = new IFA_LLLCHAR(120, "ADDITIONAL AMOUNTS");
        f[55] = new IFA_LLLBINARY(255, "INTEGRATED CIRCUIT CARD SYSTEM RELATED DATA");
        f[70] = new IFA_NUMERIC(3, "NETWORK MANAGEMENT INFORMATION CODE");
        f[90] = new IFA_NUMERIC(42, "ORIGINAL DATA ELEMENTS");
        return f;
    }

    public CardBus87Packager() {
        super();
        setFieldPackager(fields());
    }
}
